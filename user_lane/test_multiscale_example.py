"""The multiscale Poisson example in quick mode asserts its claim at XLA's default flags: its quick
run is dominated by running its training steps, not by compiling them (the other examples,
user_lane/test_examples.py, are compiled more than they run)."""

from scripts import load_script


def test_multiscale_poisson_example(tmp_path, capsys):
    report = load_script("examples/multiscale_poisson.py").main(quick=True, out=str(tmp_path))
    (fourier,) = report["relative_l2"].values()  # quick: the Fourier-feature network alone
    assert fourier < 0.3  # main() asserted it too
    assert (tmp_path / "multiscale_poisson.png").stat().st_size > 10_000
    assert "closed road" in capsys.readouterr().out

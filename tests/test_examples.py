"""Every example script runs in quick mode and asserts its own claim."""

import pytest
from helpers import load_script


@pytest.mark.parametrize("quick", [True, False])
def test_jacobian_hessian_example(quick, capsys):
    errors = load_script("examples/jacobian_hessian.py").main(quick=quick)
    assert set(errors) == {"jacobian", "hessian", "laplacian"}
    assert max(errors.values()) < 1e-4
    assert "Hessian of output 0" in capsys.readouterr().out

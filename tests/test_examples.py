"""Every example script runs in quick mode and asserts its own claim."""

import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def load(relative):
    spec = importlib.util.spec_from_file_location(pathlib.Path(relative).stem, ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("quick", [True, False])
def test_jacobian_hessian_example(quick, capsys):
    errors = load("examples/jacobian_hessian.py").main(quick=quick)
    assert set(errors) == {"jacobian", "hessian", "laplacian"}
    assert max(errors.values()) < 1e-4
    assert "Hessian of output 0" in capsys.readouterr().out

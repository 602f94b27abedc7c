"""Importing the repository's scripts (examples, benchmarks) as a user runs them."""


def load_script(relative):
    """Import a script of the repository (an example or benchmark) by its path from the root."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parent.parent / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

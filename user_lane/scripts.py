"""Importing the repository's scripts (examples, benchmarks) as a user runs them."""


def load_script(relative):
    """Import a script of the repository by its path from the root: an example as a file (as
    `python examples/x.py` runs it), a benchmark as the module `benchmarks.x` (as
    `python -m benchmarks.x` from the root runs it)."""
    import importlib
    import importlib.util
    import pathlib
    import sys

    root = pathlib.Path(__file__).resolve().parent.parent
    if relative.startswith("benchmarks/"):
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        return importlib.import_module(relative[:-3].replace("/", "."))
    path = root / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

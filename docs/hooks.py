"""mkdocs hook: publish the benchmark figures of `benchmarks/results/` with the site, so that
docs/benchmarks.md shows the plots the benchmark scripts wrote beside their tables."""

import pathlib

from mkdocs.structure.files import File


def on_files(files, config):
    root = pathlib.Path(config["config_file_path"]).parent
    for figure in sorted((root / "benchmarks" / "results").glob("*.png")):
        uri = f"benchmarks/results/{figure.name}"
        files.append(File.generated(config, uri, abs_src_path=str(figure)))
    return files

"""Write a notebook from a compact list of (kind, source) cells: used to author notebooks in git.

    python tools/nbwrite.py   # not needed by users; notebooks are committed as .ipynb
"""
from __future__ import annotations

import nbformat


def write_notebook(path, cells) -> None:
    """cells: list of ("md" | "code" | "params", source)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "aes-companion", "display_name": "AesExpert Companion", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for kind, source in cells:
        source = source.strip("\n")
        if kind == "md":
            nb.cells.append(nbformat.v4.new_markdown_cell(source))
        else:
            cell = nbformat.v4.new_code_cell(source)
            if kind == "params":
                cell.metadata["tags"] = ["parameters"]
            nb.cells.append(cell)
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"
    nbformat.validate(nb)
    nbformat.write(nb, path)

"""One-line notebook set-up (``from aes_lib.nb import setup; setup()``) and output checks.

``setup()`` makes relative paths mean the same thing wherever a notebook runs: under
``aes reproduce`` (kernel in the project root), in JupyterLab (kernel in ``notebooks/``) or in a
kernel started in any folder inside the project, the working folder becomes the project root, so
``out_dir = "outputs"`` is always ``<project>/outputs``. A kernel outside any project checkout
(e.g. a test running papermill with ``cwd`` in a temporary folder) keeps its folder.
"""

from __future__ import annotations

import logging
import os
import random
import sys
from pathlib import Path
from typing import Iterable

DEFAULT_SEED = 0


def seed_everything(seed: int = DEFAULT_SEED) -> None:
    """Seed Python, NumPy and (when it is already imported) torch."""
    random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


def is_project_root(folder: Path) -> bool:
    """A checkout of this project: ``pyproject.toml`` beside the ``aes_lib`` package and ``notebooks/``."""
    return ((folder / "pyproject.toml").is_file() and (folder / "aes_lib" / "__init__.py").is_file()
            and (folder / "notebooks").is_dir())


def find_project_root(start: str | Path | None = None) -> Path | None:
    """The project checkout holding ``start`` (default: the working folder); ``None`` outside any."""
    start = Path(start if start is not None else Path.cwd()).resolve()
    return next((folder for folder in (start, *start.parents) if is_project_root(folder)), None)


def enter_project_root() -> Path:
    """Make the project root the working folder (when there is one); return the working folder."""
    root = find_project_root()
    if root is not None and root != Path.cwd().resolve():
        os.chdir(root)
        logging.getLogger(__name__).info("working folder: %s (relative paths such as out_dir start here)",
                                         root)
    return Path.cwd()


def setup(seed: int = DEFAULT_SEED, log_level: int = logging.INFO) -> None:
    """Fix the working folder (see the module doc), seeds, plotting style, display options and
    logging for a notebook."""
    seed_everything(seed)
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stdout, force=True)
    enter_project_root()
    for noisy in ("matplotlib", "PIL", "httpx", "urllib3", "fontTools"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        from aes_lib.style import apply_style

        apply_style()  # imports matplotlib; skipped where it is not installed
    except ImportError:
        pass
    else:
        if "ipykernel" in sys.modules:
            from IPython import get_ipython

            ip = get_ipython()
            if ip is not None:
                ip.run_line_magic("matplotlib", "inline")
    try:
        import pandas as pd

        pd.set_option("display.max_columns", 30)
        pd.set_option("display.width", 160)
        pd.set_option("display.precision", 3)
    except ImportError:
        pass


def check_outputs(paths: Iterable[str | Path]) -> list[Path]:
    """Fail unless every path exists and is non-empty (a folder must hold at least one file)."""
    problems, checked = [], []
    for p in map(Path, paths):
        if not p.exists():
            problems.append(f"{p}: missing")
        elif p.is_dir() and not any(q.is_file() for q in p.rglob("*")):
            problems.append(f"{p}: empty folder")
        elif p.is_file() and p.stat().st_size == 0:
            problems.append(f"{p}: empty file")
        checked.append(p)
    if problems:
        raise RuntimeError("expected outputs are missing or empty:\n  " + "\n  ".join(problems))
    logging.getLogger(__name__).info("all %d expected outputs present", len(checked))
    return checked

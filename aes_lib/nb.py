"""One-line notebook set-up (``from aes_lib.nb import setup; setup()``) and output checks."""

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


def setup(seed: int = DEFAULT_SEED, log_level: int = logging.INFO) -> None:
    """Fix seeds, plotting style, display options and logging for a notebook."""
    seed_everything(seed)
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stdout, force=True)
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

"""One-line notebook set-up (``from aes_lib.nb import setup; setup()``) and output checks.

``setup()`` makes relative paths mean the same thing wherever a notebook runs: in JupyterLab
(kernel in ``notebooks/``) or in a kernel started in any folder inside the project, the working
folder becomes the project root, so ``out_dir = "outputs"`` is always ``<project>/outputs``. A
kernel outside any project checkout (e.g. a test running papermill with ``cwd`` in a temporary
folder) keeps its folder, and so does a kernel ``aes reproduce`` started (it sets
``AES_KERNEL_CWD_CHOSEN=1``): the runner chose its folder (``--cwd``, default the folder the runner
runs in) and gives ``out_dir`` relative to it, so the manifest and the outputs share a folder.

Under ``aes reproduce`` (which sets ``AES_NOTEBOOK_BATCH=1`` for its kernels) progress bars are
plain text, so the executed notebook keeps the bar's last state ("400/400") instead of a widget
whose saved text is its first state ("0/400").
"""

from __future__ import annotations

import logging
import os
import random
import sys
from pathlib import Path
from typing import Iterable

DEFAULT_SEED = 0
#: Set by the runner for the kernels it starts: nobody watches, the executed copy is what is read.
BATCH_ENV = "AES_NOTEBOOK_BATCH"
#: Set by the runner: it chose the kernel's working folder (``--cwd``) and gave ``out_dir``
#: relative to it, so :func:`setup` must not move the kernel.
KERNEL_CWD_ENV = "AES_KERNEL_CWD_CHOSEN"


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
    if not os.environ.get(KERNEL_CWD_ENV):
        enter_project_root()
    if os.environ.get(BATCH_ENV):
        use_text_progress_bars()
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
        pd.set_option("display.max_colwidth", None)   # critiques and answers are read whole
    except ImportError:
        pass


def use_text_progress_bars(min_seconds: float = 2.0) -> None:
    """Make ``tqdm.auto`` give text bars on stdout, redrawn at most every ``min_seconds``."""
    import tqdm.auto
    from tqdm.std import tqdm as text_tqdm

    class TextProgressBar(text_tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("file", sys.stdout)
            kwargs.setdefault("mininterval", min_seconds)
            super().__init__(*args, **kwargs)

    tqdm.auto.tqdm = TextProgressBar


def side_by_side(columns: dict[str, str], width_px: int = 360):
    """Texts in columns under their titles, whole and with their line breaks (for reading)."""
    import html

    from IPython.display import HTML

    cells = "".join(
        f"<div style='flex:1;min-width:{width_px // 2}px;max-width:{width_px * 2}px'>"
        f"<h4 style='margin:0 0 .4em 0'>{html.escape(title)}</h4>"
        f"<div style='white-space:pre-wrap;text-align:left;font-size:90%;line-height:1.35'>"
        f"{html.escape(text)}</div></div>" for title, text in columns.items())
    return HTML(f"<div style='display:flex;gap:1.5em;align-items:flex-start'>{cells}</div>")


def preview(path: str | Path, width: int = 900, quality: int = 85):
    """A small JPEG copy of an image for display, so a big PNG does not bloat the notebook."""
    import io

    from IPython.display import Image
    from PIL import Image as PILImage

    from aes_lib.images import load_rgb

    im = load_rgb(path)   # upright, 8-bit RGB, as every stage sees it
    if im.width > width:
        im = im.resize((width, round(im.height * width / im.width)), PILImage.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality, optimize=True)
    shown = im.width
    return Image(data=buf.getvalue(), format="jpeg", width=shown)


def check_outputs(paths: Iterable[str | Path]) -> None:
    """Fail unless every path exists and is non-empty (a folder must hold at least one file).

    Returns nothing, so a notebook's last cell shows the one-line log, not a list of paths."""
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

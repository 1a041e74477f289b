#!/usr/bin/env python
"""Open the report gallery in a real headless browser and take a screenshot to look at.

    python scripts/check_gallery.py --out outputs            # -> outputs/logs/gallery.png

Checks, in order: ``index.html`` and ``index.md`` exist; every local link and image in them
resolves; Debian's Chromium renders the page (flags for a machine without a screen or network);
the screenshot is not blank. Exit code 0 when all pass. Look at the screenshot yourself: this
script proves the page renders, not that it reads well.

Needs Chromium (``apt-get install -y chromium``); ``--browser`` names another binary.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--allow-file-access-from-files"]


def screenshot(browser: str, page: Path, png: Path, width: int, height: int, timeout: int) -> None:
    with tempfile.TemporaryDirectory(prefix="aes-chromium-") as profile:
        cmd = [browser, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
               "--virtual-time-budget=5000", f"--screenshot={png}", page.resolve().as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not png.exists():
        raise RuntimeError(f"{browser} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")


def non_white_share(png: Path) -> float:
    from PIL import Image

    img = Image.open(png).convert("L")
    hist = img.histogram()
    return 1.0 - sum(hist[250:]) / max(1, sum(hist))


def main(argv: list[str] | None = None) -> int:
    from aes_lib.report.gallery import broken_links

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="outputs", help="output folder holding index.html")
    ap.add_argument("--screenshot", default="", help="PNG to write (default: <out>/logs/gallery.png)")
    ap.add_argument("--browser", default=shutil.which("chromium") or "chromium")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=4000, help="window height: how much of the page")
    ap.add_argument("--timeout", type=int, default=120)
    args = ap.parse_args(argv)

    out = Path(args.out)
    problems = []
    for name in ("index.html", "index.md"):
        page = out / name
        if not page.exists():
            problems.append(f"{page}: missing (run `aes report --out {out}`)")
            continue
        problems += [f"{page}: broken link {link}" for link in broken_links(page)]
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    png = Path(args.screenshot) if args.screenshot else out / "logs" / "gallery.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    screenshot(args.browser, out / "index.html", png, args.width, args.height, args.timeout)
    share = non_white_share(png)
    print(f"links ok; screenshot {png} ({share:.1%} of pixels not white)")
    if share < 0.02:
        print(f"{png}: looks blank", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

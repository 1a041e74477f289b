#!/usr/bin/env python
"""What decoding every image at `aes collect import` costs, on the embedded dataset.

Builds AesMMIT-mini (or uses ``--data DIR`` holding a built ``manifest.json``), writes a CSV of
``--per-image`` critiques per image, and imports it twice into fresh stores: without
``--images`` (no image is opened) and with ``--images`` (every image decoded once). Prints the
wall time of each import, the difference, and the time per decoded image. Prints figures only;
it asserts no speed. Run: ``PYTHONPATH=. python bench/import_decode.py``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="folder with manifest.json (default: build AesMMIT-mini in a temp folder)")
    p.add_argument("--per-image", type=int, default=3, help="critiques per image in the CSV")
    p.add_argument("--repeats", type=int, default=3, help="imports of each kind; the fastest is shown")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from aes_lib.collect import ImportOptions, import_into_store

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        if a.data:
            data = Path(a.data)
        else:
            from aes_lib.data import DataConfig, build_dataset

            data = build_dataset(DataConfig.from_dict(out=str(tmp_path / "data")), progress=False).parent
        images = json.loads((data / "manifest.json").read_text())["images"]
        path = tmp_path / "critiques.csv"
        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["image", "grade", "description", "annotator"])
            for rec in images:
                for k in range(a.per_image):
                    w.writerow([rec["file"], "good", "A calm scene with soft light.", f"ann{k}"])
        times: dict[str, float] = {}
        for kind, images_dir in (("no --images (nothing decoded)", None), ("--images (every image decoded)", data)):
            best = float("inf")
            for r in range(a.repeats):
                out = tmp_path / f"out-{len(times)}-{r}"
                t0 = time.perf_counter()
                result = import_into_store(out, path, "csv", ImportOptions(images_dir=images_dir))
                best = min(best, time.perf_counter() - t0)
            assert result.imported == len(images) * a.per_image, result.summary()
            times[kind] = best
            print(f"{kind:32s} {len(images) * a.per_image} critiques of {len(images)} images: {best:.3f} s "
                  f"(measured by this run, fastest of {a.repeats})")
        decoded, plain = times["--images (every image decoded)"], times["no --images (nothing decoded)"]
        print(f"decoding cost: {decoded - plain:.3f} s in all, {(decoded - plain) / len(images) * 1000:.2f} ms "
              f"per image (measured by this run)")


if __name__ == "__main__":
    main()

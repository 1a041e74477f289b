#!/usr/bin/env python
"""Peak memory of ``generate.batch_export`` (the refine step, images sent) on synthetic inputs.

Builds ``--photos`` x 2 images of random noise (``--image-px`` square PNG, about 3 bytes a pixel,
so 180 px is about 97 KB, the size of a web-resolution photo) and ``--per-image`` critiques each
under ``--work``, then runs the export in a fresh child process and prints, as JSON: the child's
resident memory after imports and at its peak (``ru_maxrss``, Linux: KiB), the requests and bytes
written, the files and the sha256 of each (to compare two versions of the code byte for byte:
run the script from each tree on the same ``--work`` folder).

Needs Pillow and numpy; sends nothing (the export only writes files). Example:

    PYTHONPATH=. python bench/batch_export_memory.py --work /tmp/export_bench --photos 150 \
        --per-image 2 --max-file-mb 20
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_inputs(work: Path, photos: int, per_image: int, image_px: int) -> None:
    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(ROOT / "tests"))
    from generate_fixtures import make_inputs as tiny_inputs

    tiny_inputs(work, n_photos=photos, per_image=per_image)
    rng = np.random.default_rng(0)
    for png in sorted((work / "data" / "images").glob("*.png")):   # replace the 8 px images
        Image.fromarray(rng.integers(0, 255, (image_px, image_px, 3), dtype=np.uint8)).save(png)


def export_child(work: Path, out_file: Path, max_requests: int | None, max_bytes: int | None) -> dict:
    from aes_lib.client import ClientConfig
    from aes_lib.generate import GenerateConfig, batch_export

    cfg = GenerateConfig.from_dict({"backend": "openai"})
    client_cfg = ClientConfig.from_dict({"base_url": "http://127.0.0.1:9/v1", "model": "bench-model",
                                         "cache_path": str(work / "bench_cache.sqlite")})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    r = batch_export(cfg, out_file, work, client_cfg, max_requests=max_requests, max_bytes=max_bytes)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    files = [{**f, "sha256": hashlib.sha256(Path(f["path"]).read_bytes()).hexdigest()} for f in r["files"]]
    return {"code": str(ROOT), "step": r["step"], "requests": r["requests"],
            "bytes_written": sum(f["bytes"] for f in files), "rss_after_imports_kib": before,
            "rss_peak_kib": peak, "files": files, "label": "measured by this run"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="folder for the inputs and the export")
    p.add_argument("--photos", type=int, default=150)
    p.add_argument("--per-image", type=int, default=2)
    p.add_argument("--image-px", type=int, default=180)
    p.add_argument("--max-requests-per-file", type=int, default=None)
    p.add_argument("--max-file-mb", type=float, default=None)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    out_file = a.work / "export" / "refine_requests.jsonl"
    max_bytes = None if a.max_file_mb is None else int(a.max_file_mb * 1_000_000)
    if a.child:
        print(json.dumps(export_child(a.work, out_file, a.max_requests_per_file, max_bytes)))
        return
    if not (a.work / "critiques" / "critiques.jsonl").exists():
        make_inputs(a.work, a.photos, a.per_image, a.image_px)
    cmd = [sys.executable, __file__, "--work", str(a.work), "--child"]
    if a.max_requests_per_file:
        cmd += ["--max-requests-per-file", str(a.max_requests_per_file)]
    if a.max_file_mb is not None:
        cmd += ["--max-file-mb", str(a.max_file_mb)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    print(f"{result['requests']} requests, {result['bytes_written'] / 1e6:.1f} MB in {len(result['files'])} "
          f"file(s); RSS after imports {result['rss_after_imports_kib'] / 1024:.0f} MiB, peak "
          f"{result['rss_peak_kib'] / 1024:.0f} MiB ({result['code']})")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""Tiny inputs for the generation tests: a manifest, small PNGs and valid critiques."""

from __future__ import annotations

import json
import random
from pathlib import Path

from aes_lib.schema import ATTRIBUTES, GRADES, Critique, ImageRecord, write_jsonl

WORDS = {"high": "sharp", "mid": "decent", "low": "blurry"}


def make_inputs(out_dir: Path, n_photos: int = 6, per_image: int = 2, seed: int = 0,
                extra_critiques: list[Critique] | None = None) -> dict[str, Path]:
    """Write ``data/manifest.json`` (+ PNGs) and ``critiques/critiques.jsonl`` under ``out_dir``."""
    from PIL import Image

    rng = random.Random(seed)
    data = out_dir / "data"
    (data / "images").mkdir(parents=True, exist_ok=True)
    images, critiques = [], []
    splits = ["train", "train", "train", "train", "val", "test"]
    for p in range(n_photos):
        for variant in ("original", "blur"):
            iid = f"photo{p}__{variant}"
            Image.new("RGB", (8, 8), (30 * p % 255, 60, 90)).save(data / "images" / f"{iid}.png")
            images.append(ImageRecord(id=iid, file=f"images/{iid}.png", source_photo=f"photo{p}",
                                      split=splits[p % len(splits)], width=8, height=8,
                                      degradation="none" if variant == "original" else "blur",
                                      strength=0.0 if variant == "original" else 0.5))
            for a in range(per_image):
                grade = rng.choice(GRADES)
                attrs = {}
                for attr in ATTRIBUTES:
                    rating = rng.randint(1, 5)
                    attrs[attr] = {"rating": rating,
                                   "word": (rng.choice([None, f"w{attr[:3]}{rating}"]))}
                critiques.append(Critique(
                    id=f"c-{iid}-{a}", image_id=iid, annotator=f"sim{a}", annotator_kind="simulated",
                    protocol_version="aesexpert-default@1.0", grade=grade, attributes=attrs,
                    description=f"<p>hello there! the   photo {p} looks {grade}..</p> it has a {variant} look",
                    suggestion=rng.choice(["", "crop tighter"])))
    critiques += extra_critiques or []
    (data / "manifest.json").write_text(json.dumps(
        {"name": "test", "version": 1, "images": [i.to_dict() for i in images]}))
    (out_dir / "critiques").mkdir(parents=True, exist_ok=True)
    write_jsonl(out_dir / "critiques" / "critiques.jsonl", critiques)
    return {"manifest": data / "manifest.json", "critiques": out_dir / "critiques" / "critiques.jsonl"}

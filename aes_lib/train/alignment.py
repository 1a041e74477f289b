"""Stage 1 data: plain questions about what the photos show, for LLaVA's alignment stage.

LLaVA is trained in two stages: first the projector learns to map image features into the
language model's space on plain image-text pairs, then the model is instruction-tuned. AesExpert
fine-tuned LLaVA-1.5, which had been through both. The small pretrained model this project
builds goes through the same two stages: stage 1 on these records, stage 2 on AesMMIT.

Every record is about *content* only (the photo's recorded subject and category in
``aes_lib/assets/photos.yaml``), never about quality, colour, mood or composition, so the
stage-1 model (notebook 04's *base*) sees and knows the answer formats but was never taught
aesthetics. Each image of the split gets: a short description, and three multiple-choice
questions (main subject, subject yes-no, kind of photo) in the benchmark's letter form; training
can present them in the cloze form too (``TrainConfig.mcq_form``). Degraded variants of a photo
get the same content answers (a blurred cat is still a cat). Deterministic for a seed.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Sequence

from aes_lib.schema import ImageRecord, option_letters

log = logging.getLogger(__name__)

DESCRIBE = ("What does this photo show?", "Describe the content of this image briefly.",
            "What is in this picture?")
SUBJECT_QUESTION = "What is the main subject of this photo?"
YES_NO_QUESTION = "Does this photo show {subject}?"
CATEGORY_QUESTION = "What kind of photo is this?"
CATEGORY_WORDS = {"animal": "an animal photo", "nature": "a nature photo", "object": "a still life of an object",
                  "portrait": "a portrait", "scene": "a scene or place", "science": "a scientific image",
                  "texture": "a close-up of a texture"}


def _mcq(question: str, options: Sequence[str], answer: str) -> list[dict[str, str]]:
    from aes_lib.evaluate.bench import prompt_file

    letters = option_letters(len(options))
    lines = "\n".join(f"{letter}. {text}" for letter, text in zip(letters, options))
    prompt = prompt_file("eval_mcq_v1.txt").format(question=question, options=lines).strip()
    letter = letters[list(options).index(answer)]
    return [{"from": "human", "value": f"<image>\n{prompt}"}, {"from": "gpt", "value": f"{letter}. {answer}"}]


def content_records(images: Sequence[ImageRecord], split: str = "train", seed: int = 0,
                    n_options: int = 4) -> list[dict[str, Any]]:
    """LLaVA records about the content of every image of ``split`` (see the module docstring).

    Wrong options come from other photos of the same split, so nothing outside it is named.
    """
    chosen = [im for im in images if im.split == split]
    if not chosen:
        raise ValueError(f"no image of split {split!r} to build alignment records from")
    subjects = sorted({im.traits["subject"] for im in chosen})
    categories = sorted({im.category for im in chosen if im.category in CATEGORY_WORDS})
    if len(subjects) < 2:
        raise ValueError(f"split {split!r} has fewer than two photos: no wrong option to offer")
    rng = random.Random(f"alignment:{seed}:{split}")
    records = []
    for im in sorted(chosen, key=lambda r: r.id):
        subject = im.traits["subject"]
        others = [s for s in subjects if s != subject]
        base = {"image": im.file, "type": "content", "annotator_kind": "recorded-traits"}
        records.append({**base, "id": f"{im.id}:align:describe", "qtype": "open", "conversations": [
            {"from": "human", "value": "<image>\n" + rng.choice(DESCRIBE)},
            {"from": "gpt", "value": f"It shows {subject}."}]})
        options = rng.sample(others, min(n_options - 1, len(others))) + [subject]
        rng.shuffle(options)
        records.append({**base, "id": f"{im.id}:align:subject", "qtype": "what",
                        "conversations": _mcq(SUBJECT_QUESTION, options, subject)})
        shown = subject if rng.random() < 0.5 else rng.choice(others)
        yes_no = ["Yes", "No"] if rng.random() < 0.5 else ["No", "Yes"]
        records.append({**base, "id": f"{im.id}:align:yes-no", "qtype": "yes-no", "conversations": _mcq(
            YES_NO_QUESTION.format(subject=shown), yes_no, "Yes" if shown == subject else "No")})
        if im.category in CATEGORY_WORDS and len(categories) >= 2:
            wrong = [CATEGORY_WORDS[c] for c in categories if c != im.category]
            options = rng.sample(wrong, min(n_options - 1, len(wrong))) + [CATEGORY_WORDS[im.category]]
            rng.shuffle(options)
            records.append({**base, "id": f"{im.id}:align:category", "qtype": "what",
                            "conversations": _mcq(CATEGORY_QUESTION, options, CATEGORY_WORDS[im.category])})
    return records


def write_alignment_data(out_dir: str | Path, dest: str | Path, seed: int = 0) -> dict[str, Path]:
    """``dest/align_train.json`` and ``dest/align_val.json`` from ``out_dir/data/manifest.json``."""
    from aes_lib.io import write_json
    from aes_lib.schema import read_manifest

    images = read_manifest(Path(out_dir) / "data" / "manifest.json")
    dest = Path(dest)
    paths = {}
    for split in ("train", "val"):
        records = content_records(images, split, seed)
        paths[split] = dest / f"align_{split}.json"
        write_json(paths[split], records)
        log.info("%s: %d stage-1 (content) records of the %s photos", paths[split], len(records), split)
    return paths

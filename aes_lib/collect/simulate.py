"""Simulated annotators: critiques derived from each image's recorded ground truth.

They exist so the offline pipeline has critiques to work with. Each critique restates facts the
dataset recorded (the source photo's traits and base grade, the degradation kind and strength),
perturbed by per-annotator seeded noise; they are labelled ``annotator_kind="simulated"`` and
are not human judgments. Phrase banks and rating drops live in
``aes_lib/assets/collect_simulation.yaml``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, Iterable

from aes_lib.config import Config, require
from aes_lib.schema import (ATTRIBUTES, GRADE_SCORE, GRADES, RATING_MAX, RATING_MIN, SCORE_GRADE, Critique,
                            ImageRecord)



@dataclass
class SimulateConfig(Config):
    n_annotators: int = field(default=5, metadata={"help": "size of the simulated annotator pool"})
    annotators_per_image: int = field(default=3, metadata={"help": "simulated critiques per image"})
    seed: int = field(default=0, metadata={"help": "seed: same seed, same critiques"})
    bias_sd: float = field(default=0.3, metadata={"help": "sd of each annotator's rating bias"})
    noise_sd: float = field(default=0.45, metadata={"help": "sd of per-answer rating noise"})
    max_images: int = field(default=0, metadata={"help": "critique only the first N images (0 = all)"})

    def check(self) -> None:
        require(self.n_annotators >= 1, "n_annotators", "must be at least 1")
        require(1 <= self.annotators_per_image <= self.n_annotators, "annotators_per_image",
                f"must be between 1 and n_annotators ({self.n_annotators})")
        require(self.bias_sd >= 0 and self.noise_sd >= 0, "noise_sd", "noise must be >= 0")
        require(self.max_images >= 0, "max_images", "must be >= 0")


@lru_cache(maxsize=1)
def simulation_bank() -> dict[str, Any]:
    import yaml

    text = (resources.files("aes_lib") / "assets" / "collect_simulation.yaml").read_text("utf-8")
    return yaml.safe_load(text)


def annotator_names(n: int) -> list[str]:
    return [f"sim-{i + 1:02d}" for i in range(n)]


def _clamp_round(x: float, lo: int = RATING_MIN, hi: int = RATING_MAX) -> int:
    return int(min(hi, max(lo, int(x + 0.5) if x >= 0 else -int(-x + 0.5))))


def _band(rating: int) -> str:
    return "low" if rating <= 2 else ("mid" if rating == 3 else "high")


def _trait(img: ImageRecord, key: str, default: str) -> str:
    value = (img.traits or {}).get(key)
    return str(value) if value not in (None, "") else default


def true_ratings(img: ImageRecord) -> tuple[float, dict[str, float]]:
    """The noise-free grade score and attribute ratings implied by the recorded facts."""
    bank = simulation_bank()
    kind = img.degradation
    if kind not in bank["degradations"]:
        raise ValueError(f"image {img.id!r}: degradation {kind!r} has no simulation entry "
                         f"in aes_lib/assets/collect_simulation.yaml")
    spec = bank["degradations"][kind]
    base_grade = _trait(img, "base_grade", "good")
    if base_grade not in GRADE_SCORE:
        raise ValueError(f"image {img.id!r}: traits.base_grade {base_grade!r} is not one of {list(GRADES)}")
    base = float(GRADE_SCORE[base_grade])
    photo_rng = random.Random(f"photo:{img.source_photo}")  # same offsets for every annotator
    ratings = {}
    for attr in ATTRIBUTES:
        offset = photo_rng.choice((-0.5, 0.0, 0.0, 0.5))
        ratings[attr] = base + offset - float(spec["drops"].get(attr, 0.0)) * img.strength
    grade = base - float(spec["grade_drop"]) * img.strength
    return grade, ratings


def simulate_critique(img: ImageRecord, annotator: str, protocol_id: str, seed: int = 0,
                      bias_sd: float = 0.3, noise_sd: float = 0.45) -> Critique:
    """One simulated annotator's critique of one image (deterministic for the seed)."""
    bank = simulation_bank()
    bias = random.Random(f"{seed}:bias:{annotator}").gauss(0.0, bias_sd)
    rng = random.Random(f"{seed}:{annotator}:{img.id}")
    grade_true, attr_true = true_ratings(img)
    grade_score = _clamp_round(grade_true + bias + rng.gauss(0.0, noise_sd))
    attributes = {}
    for attr in ATTRIBUTES:
        rating = _clamp_round(attr_true[attr] + bias + rng.gauss(0.0, noise_sd))
        word = rng.choice(bank["words"][attr][_band(rating)]) if rng.random() < 0.8 else None
        attributes[attr] = {"rating": rating, "word": word}
    description, suggestion = _write_text(img, grade_score, rng)
    return Critique(
        id=f"{annotator}:{img.id}", image_id=img.id, annotator=annotator,
        annotator_kind="simulated", protocol_version=protocol_id, grade=SCORE_GRADE[grade_score],
        attributes=attributes, description=description, suggestion=suggestion,
        seconds_spent=round(20 + rng.random() * 60, 1), created_at="",
        source=f"simulated@{bank['version']}",
        extra={"degradation": img.degradation, "strength": img.strength, "seed": seed},
    )


def with_article(phrase: str) -> str:
    """``phrase`` after "a" or "an" by its first letter ("a calm", "an airy", "an ominous")."""
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def _write_text(img: ImageRecord, grade_score: int, rng: random.Random) -> tuple[str, str]:
    bank = simulation_bank()
    spec = bank["degradations"][img.degradation]
    facts = {
        "subject": _trait(img, "subject", img.title or "the subject"),
        "palette": _trait(img, "palette", "natural"),
        "mood": _trait(img, "mood", "neutral"),
        "a_mood": with_article(_trait(img, "mood", "neutral")),
        "composition": _trait(img, "composition", "straightforward"),
        "interest": _trait(img, "interest", "the subject itself"),
    }
    sentences = [rng.choice(bank["openings"]).format(**facts)]
    if rng.random() < 0.7:
        sentences.append(rng.choice(bank["composition_sentences"]).format(**facts))
    if rng.random() < 0.6:
        sentences.append(rng.choice(bank["interest_sentences"]).format(**facts))
    band = _band(grade_score)
    if spec["defects"] and img.strength > 0:
        defect = rng.choice(spec["defects"])
        sentences.append(rng.choice(bank["defect_sentences"]).format(defect=defect))
        suggestion = rng.choice(spec["suggestions"])
    else:
        sentences.append(rng.choice(bank["clean_sentences"][band]))
        suggestion = rng.choice(bank["default_suggestions"][band])
    if rng.random() < 0.25:
        suggestion = ""  # the suggestion is optional, and not everyone gives one
    return " ".join(s[0].upper() + s[1:] for s in sentences), suggestion


def simulate_critiques(images: Iterable[ImageRecord], protocol_id: str,
                       config: SimulateConfig | None = None) -> list[Critique]:
    """Critiques from ``annotators_per_image`` of ``n_annotators`` simulated annotators per image."""
    cfg = config or SimulateConfig()
    pool = annotator_names(cfg.n_annotators)
    images = list(images)
    if cfg.max_images:
        images = images[: cfg.max_images]
    out = []
    for img in images:
        chosen = sorted(random.Random(f"{cfg.seed}:pick:{img.id}").sample(pool, cfg.annotators_per_image))
        out.extend(simulate_critique(img, a, protocol_id, cfg.seed, cfg.bias_sd, cfg.noise_sd)
                   for a in chosen)
    return out

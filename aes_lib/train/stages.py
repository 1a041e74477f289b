"""Notebook 03's training runs: LLaVA's stage 1 for the small pretrained model, stage 2 on
AesMMIT, and the random tiny model trained beside them as the lesson's contrast.

Where each run writes, under ``<out_dir>/train/``:

- ``base_model/``: the model notebook 03 builds (``small``: pretrained parts; ``tiny``: random);
- ``stage1_data/`` and ``stage1/``: stage 1 (``model="small"`` only), whose ``merged/`` model
  is the **base** of notebook 04: it sees and knows the answer formats, never saw aesthetics;
- ``run/``: stage 2, the AesExpert-style fine-tune (notebook 04's *fine-tuned* model);
- ``tiny/base_model/`` and ``tiny/run/``: the contrast (the tiny model's own recipe,
  ``aes_lib/assets/train_tiny_cpu.yaml``).
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path
from typing import Any

from aes_lib.train.config import TrainConfig

log = logging.getLogger(__name__)

TINY_RECIPE = "train_tiny_cpu.yaml"


def stage1_config(out_dir: str | Path, steps: int, **settings: Any) -> TrainConfig:
    """Stage 1 of the small pretrained model: content questions about the training photos
    (:mod:`aes_lib.train.alignment`), multiple choice in both forms. ``settings``: the other
    :class:`TrainConfig` keys (learning rates, LoRA, batch), as stage 2 uses them."""
    train = Path(out_dir) / "train"
    return TrainConfig.from_dict({
        **settings, "model": "small", "base_model_dir": str(train / "base_model"),
        "train_file": str(train / "stage1_data" / "align_train.json"),
        "val_file": str(train / "stage1_data" / "align_val.json"),
        "image_root": str(Path(out_dir) / "data"), "output_dir": str(train / "stage1"),
        "max_steps": steps, "mcq_form": "both", "types": [], "max_train_samples": 0, "resume_from": ""})


def prepare_stage1(cfg: TrainConfig, out_dir: str | Path, seed: int = 0) -> str:
    """Write the stage-1 data from ``data/manifest.json`` (``train/stage1_data/``) and build the
    small model (its image tokens standardised on the training photos) unless it is built;
    returns the built model's folder. ``train(cfg)`` then runs stage 1."""
    from aes_lib.train.alignment import write_alignment_data
    from aes_lib.train.data import read_llava_json
    from aes_lib.train.loop import prepare_base_model

    paths = write_alignment_data(out_dir, Path(cfg.train_file).parent, seed=seed)
    return prepare_base_model(cfg, read_llava_json(paths["train"]))


def tiny_contrast_config(out_dir: str | Path, steps: int, seed: int = 0, progress: bool = True) -> TrainConfig:
    """The random tiny LLaVA on the same AesMMIT files, with its own recipe (``lm_head`` trained,
    lr 2e-3), in ``train/tiny/``."""
    import yaml

    recipe = yaml.safe_load(resources.files("aes_lib").joinpath("assets", TINY_RECIPE).read_text(encoding="utf-8"))
    out = Path(out_dir)
    recipe.update(train_file=str(out / "instructions" / "llava_train.json"),
                  val_file=str(out / "instructions" / "llava_val.json"), image_root=str(out / "data"),
                  output_dir=str(out / "train" / "tiny" / "run"),
                  base_model_dir=str(out / "train" / "tiny" / "base_model"), max_steps=steps, seed=seed,
                  save_every=0, progress=progress)
    return TrainConfig.from_dict(recipe)

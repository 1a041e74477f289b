"""Stage 3: fine-tune LLaVA-family models on the generated instructions (LoRA or full).

``train(TrainConfig(...))`` runs the whole stage; ``aes train --config FILE`` is the same from
the shell. See docs/train.md. Heavy libraries are imported inside the functions.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from aes_lib.train.config import TrainConfig
from aes_lib.train.data import Collator, DataStats, LlavaDataset, encode_conversation, read_llava_json
from aes_lib.train.loop import (apply_method, make_optimizer, make_scheduler, merge_adapter,
                                prepare_base_model, read_loss_csv, train, training_step)
from aes_lib.train.plots import plot_loss_curve

__all__ = ["TrainConfig", "train", "merge_adapter", "read_loss_csv", "LlavaDataset", "Collator",
           "DataStats", "encode_conversation", "read_llava_json", "apply_method", "make_optimizer",
           "make_scheduler", "training_step", "prepare_base_model", "plot_loss_curve", "register_cli"]
log = logging.getLogger(__name__)

#: command-line flags that override a config key (flag -> key)
FLAGS = {"output_dir": str, "model": str, "method": str, "train_file": str, "val_file": str,
         "image_root": str, "max_steps": int, "lr": float, "global_batch_size": int,
         "micro_batch_size": int, "save_every": int, "resume_from": str, "seed": int,
         "precision": str}


def _parse_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def _cmd_train(args: argparse.Namespace) -> int:
    overrides = {k: getattr(args, k) for k in FLAGS if getattr(args, k) is not None}
    for item in args.set or []:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        overrides[key.strip()] = _parse_value(value)
    cfg = TrainConfig.from_yaml(args.config, **overrides) if args.config else \
        TrainConfig.from_dict(overrides)
    summary = train(cfg, stop_after=args.stop_after)
    log.info("done: %d steps, loss %s -> %s", summary["steps_done"], summary["first_loss"],
             summary["last_loss"])
    return 0


def _cmd_merge(args: argparse.Namespace) -> int:
    merge_adapter(args.base, args.adapter, args.out)
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("train", help="fine-tune a LLaVA-family model (LoRA or full)",
                              description="Fine-tune on LLaVA-layout instructions. Settings come from "
                              "--config (YAML of TrainConfig keys), then flags, then --set KEY=VALUE.")
    p.add_argument("--config", help="YAML file of TrainConfig keys (see docs/train.md)")
    for key, typ in FLAGS.items():
        p.add_argument("--" + key.replace("_", "-"), dest=key, type=typ, default=None,
                       help=TrainConfig.__dataclass_fields__[key].metadata.get("help"))
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other config key (YAML value)")
    p.add_argument("--stop-after", type=int, default=0, help="stop after N steps in total (resumable)")
    p.set_defaults(func=_cmd_train)
    m = subparsers.add_parser("merge-adapter", help="fold a LoRA adapter into its base model")
    m.add_argument("--base", required=True, help="base model folder or hub id")
    m.add_argument("--adapter", required=True, help="peft adapter folder")
    m.add_argument("--out", required=True, help="where the standalone model is written")
    m.set_defaults(func=_cmd_merge)

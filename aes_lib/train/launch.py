"""The accelerate config files shipped with the project."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

#: name -> what it is for
ACCELERATE_CONFIGS = {
    "single_gpu": "one GPU, bf16",
    "multi_gpu": "DDP over the GPUs of one node",
    "fsdp": "FSDP 2 (sharded parameters, gradients, optimizer state)",
    "deepspeed_zero3": "DeepSpeed ZeRO-3 (the peers' full fine-tune recipe)",
}


def accelerate_config(name: str) -> Path:
    """Path of a shipped accelerate config (``aes_lib/accelerate_configs/<name>.yaml``)."""
    if name not in ACCELERATE_CONFIGS:
        raise ValueError(f"unknown accelerate config {name!r} (known: {', '.join(ACCELERATE_CONFIGS)})")
    return Path(str(resources.files("aes_lib").joinpath("accelerate_configs", f"{name}.yaml")))


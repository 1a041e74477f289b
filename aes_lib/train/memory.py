"""How much GPU memory a run's weights, gradients and optimizer states take, before it starts.

Per trainable parameter the loop keeps an fp32 value (the master weight; under bf16 the
forward and backward run in bf16 through autocast), an fp32 gradient and AdamW's two fp32
moments: 16 bytes. DeepSpeed's bf16 mode keeps the same 16 bytes in another split (bf16
weight and gradient, fp32 master, fp32 moments). Frozen parameters cost their storage size
(bf16: 2 bytes). Sharding (FSDP, ZeRO) divides what it shards by the number of processes.
Activations are not counted: they depend on batch, sequence length and checkpointing.
Under DeepSpeed ZeRO-1/2 the replicated weights are bf16 (2 bytes, not the 4 counted here), so
the estimate is an upper bound there; under ZeRO-3 and FSDP it is exact for these states.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger(__name__)
GIB = 1024 ** 3
#: bytes per trainable parameter: fp32 weight (master) + fp32 gradient + AdamW's two fp32 moments
TRAINABLE_BYTES = 4 + 4 + 8
#: what each sharding level divides by the process count (ZeRO stages 1-3; FSDP full shard = 3)
SHARDING_LEVELS = {"none": 0, "optimizer": 1, "gradients": 2, "full": 3}


@dataclass
class MemoryEstimate:
    """Bytes per process for the weights, gradients and optimizer states of a run."""

    frozen_weights: float
    trainable_weights: float
    gradients: float
    optimizer_states: float
    processes: int
    sharding: str

    @property
    def total(self) -> float:
        return self.frozen_weights + self.trainable_weights + self.gradients + self.optimizer_states

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total}

    def describe(self) -> str:
        return (f"{self.total / GIB:.1f} GiB per process for weights, gradients and optimizer states "
                f"(frozen weights {self.frozen_weights / GIB:.1f}, trainable weights "
                f"{self.trainable_weights / GIB:.1f}, gradients {self.gradients / GIB:.1f}, AdamW states "
                f"{self.optimizer_states / GIB:.1f}; {self.processes} process(es), sharding {self.sharding}; "
                "activations not included)")


def estimate_training_memory(trainable_params: int, frozen_params: int, frozen_bytes: float = 2,
                             processes: int = 1, sharding: str = "none") -> MemoryEstimate:
    """Memory per process of a run with these parameter counts (see the module's text).

    ``frozen_bytes``: storage size of a frozen parameter (2 for bf16, 4 for fp32).
    ``sharding``: ``none`` (DDP, one GPU), ``optimizer`` / ``gradients`` (ZeRO-1 / ZeRO-2) or
    ``full`` (ZeRO-3, FSDP full shard: every parameter, gradient and state split).
    """
    if sharding not in SHARDING_LEVELS:
        raise ValueError(f"sharding: {sharding!r} is not one of {', '.join(SHARDING_LEVELS)}")
    if processes < 1 or trainable_params < 0 or frozen_params < 0:
        raise ValueError("processes must be >= 1 and parameter counts >= 0")
    level = SHARDING_LEVELS[sharding]

    def split(nbytes: float, from_level: int) -> float:
        return nbytes / processes if level >= from_level else nbytes

    return MemoryEstimate(
        frozen_weights=split(frozen_params * frozen_bytes, 3),
        trainable_weights=split(trainable_params * 4.0, 3),
        gradients=split(trainable_params * 4.0, 2),
        optimizer_states=split(trainable_params * 8.0, 1),
        processes=processes, sharding=sharding)


def sharding_of(accelerator) -> str:
    """The sharding level an Accelerator applies (FSDP full shard or DeepSpeed's ZeRO stage)."""
    kind = str(getattr(accelerator, "distributed_type", "")).rsplit(".", 1)[-1].upper()
    if kind == "FSDP":
        # FSDP 2 always shards parameters at rest; FSDP 1 may shard less
        strategy = str(getattr(getattr(accelerator.state, "fsdp_plugin", None), "sharding_strategy", "") or "")
        return "none" if "NO_SHARD" in strategy else "gradients" if "SHARD_GRAD_OP" in strategy else "full"
    if kind == "DEEPSPEED":
        stage = int(getattr(getattr(accelerator.state, "deepspeed_plugin", None), "zero_stage", 0) or 0)
        return {0: "none", 1: "optimizer", 2: "gradients"}.get(stage, "full")
    return "none"


def model_memory(model, processes: int = 1, sharding: str = "none") -> MemoryEstimate:
    """:func:`estimate_training_memory` for a built model (its trainable / frozen parameters)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = [p for p in model.parameters() if not p.requires_grad]
    n_frozen = sum(p.numel() for p in frozen)
    frozen_bytes = sum(p.numel() * p.element_size() for p in frozen) / n_frozen if n_frozen else 2
    return estimate_training_memory(trainable, n_frozen, frozen_bytes, processes, sharding)


def log_memory_plan(model, accelerator, method: str) -> MemoryEstimate:
    """Log the estimate before training; warn, naming the fixes, when it exceeds the GPU."""
    import torch

    est = model_memory(model, accelerator.num_processes, sharding_of(accelerator))
    log.info("memory estimate: %s", est.describe())
    if accelerator.device.type == "cuda":
        gpu = torch.cuda.get_device_properties(accelerator.device).total_memory
        if est.total > 0.9 * gpu:
            fixes = ("shard it over more GPUs: accelerate launch --config_file "
                     "aes_lib/accelerate_configs/fsdp.yaml (or deepspeed_zero3.yaml) --num_processes N"
                     if est.sharding != "full" else "use more GPUs (the states split by their count)")
            log.warning("the %s run needs about %.1f GiB per GPU before activations, the GPU has %.1f GiB: "
                        "%s, or use method=lora (see docs/train.md, 'Memory')", method, est.total / GIB,
                        gpu / GIB, fixes)
    return est

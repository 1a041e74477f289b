"""The training loop: one code path on accelerate's Accelerator, from a laptop CPU to a GPU node.

``train(cfg)`` builds (or loads) the model, encodes the data, applies LoRA or unfreezes for full
fine-tuning, and runs optimizer steps of a fixed global batch: each process takes
``micro_batch_size`` samples per forward pass and accumulates ``global / (micro x processes)``
of them, with the loss normalised by the supervised tokens of the whole global batch, so the
update does not depend on how the batch is split. Checkpoints hold the model, optimizer,
scheduler and RNG states (``Accelerator.save_state``) plus the step, which fixes the data
position; resuming continues exactly where the run stopped.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

from aes_lib.io import atomic_write_text, read_json, write_json
from aes_lib.models import input_format_of, save_processor, write_input_format
from aes_lib.train.config import TrainConfig
from aes_lib.train.data import (Collator, LlavaDataset, apply_mcq_form, read_llava_json, select_types,
                                step_indices)

log = logging.getLogger(__name__)
LOSS_COLUMNS = ("step", "loss", "lr", "tokens", "seconds")
PROJECTOR = "multi_modal_projector"
VISION = "vision_tower"


# --- model set-up -----------------------------------------------------------------------------

def resolve_precision(cfg: TrainConfig) -> str:
    """'bf16' or 'fp32' for this machine."""
    import torch

    if cfg.precision == "bf16" and not torch.cuda.is_available() and not cpu_has_native_bf16():
        log.warning("precision bf16 on a CPU without native bf16 (AMX or AVX512-BF16) is emulated and "
                    "slow: set precision 'fp32' on this machine")
    if cfg.precision != "auto":
        return cfg.precision
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (oneDNN's check: AVX512-BF16 or AMX)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - torch built without oneDNN
        return False


def multi_cpu_launch() -> bool:
    """True under torchrun / accelerate launch with several processes and no GPU (gloo DDP)."""
    import os

    import torch

    return not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1


#: Models the project builds itself (``TrainConfig.model``).
BUILT_MODELS = ("tiny", "small")


def corpus_from_records(records: Sequence[dict[str, Any]]) -> list[str]:
    """Every turn's text (without the image placeholder), for training the tiny tokenizer."""
    return [t["value"].replace("<image>", "").strip() for r in records for t in r["conversations"]]


def prepare_base_model(cfg: TrainConfig, records: Sequence[dict[str, Any]]) -> str:
    """Path (or hub id) of the base model; builds the tiny LLaVA (``model='tiny'``) or the small
    pretrained one (``model='small'``) into ``base_model_dir`` unless it is there already."""
    from aes_lib.models import build_small_llava, build_tiny_llava

    if cfg.model not in BUILT_MODELS:
        return cfg.model
    base = Path(cfg.base_model_dir)
    if (base / "config.json").exists():
        log.info("reusing the %s LLaVA in %s", cfg.model, base)
    elif cfg.model == "tiny":
        build_tiny_llava(base, corpus_texts=corpus_from_records(records), seed=cfg.seed)
    else:   # the vision tokens are standardised on the training images (never val or test)
        build_small_llava(base, seed=cfg.seed, norm_images=sorted(
            {str(Path(cfg.image_root) / r["image"]) for r in records}))
    return str(base)


def lora_target_regex(targets: Sequence[str]) -> str:
    """peft regex for the given linear layers of the language model only (not the vision tower)."""
    return rf".*language_model.*\.({'|'.join(map(re.escape, targets))})"


def apply_method(model, cfg: TrainConfig):
    """Freeze / wrap ``model`` for ``cfg.method`` and switch on the speed levers; returns the model."""
    for name, p in model.named_parameters():
        p.requires_grad_(cfg.method == "full" and not (cfg.freeze_vision_tower and VISION in name)
                         and (cfg.train_projector or PROJECTOR not in name))
    if cfg.fused_kernels:
        apply_fused_kernels(model)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        select_checkpointed_layers(model, cfg.checkpoint_fraction)
    if cfg.method == "lora":
        from peft import LoraConfig, get_peft_model

        if cfg.model == "tiny" and "lm_head" not in cfg.modules_to_save:
            log.warning("the random-init tiny model barely learns through LoRA alone: add 'lm_head' "
                        "to modules_to_save (the notebook's cpu profile does)")

        save = list(cfg.modules_to_save) + ([PROJECTOR] if cfg.train_projector else [])
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=lora_target_regex(cfg.lora_targets),
                          modules_to_save=save or None, bias="none")
        model = get_peft_model(model, lora)
    keep_fp32_masters(model)
    if cfg.torch_compile:
        for layer in language_layers(model):
            layer.compile()
    return model


def keep_fp32_masters(model) -> int:
    """Store every trainable bf16/fp16 parameter in fp32; returns how many tensors were cast.

    Under bf16 the frozen base stays bf16 and autocast runs the matrix products in bf16, but a
    trainable tensor stored in bf16 loses every update below half its rounding step (at 2e-5,
    any weight above 2^-6 in size never moves). Kept in fp32 these tensors are the master
    weights DeepSpeed's bf16 mode keeps beside its bf16 copies: the projector, every
    ``modules_to_save`` module and, in full fine-tuning, every trained weight. LoRA matrices are
    fp32 already (peft makes them so).
    """
    import torch

    cast = 0
    for p in model.parameters():
        if p.requires_grad and p.dtype in (torch.bfloat16, torch.float16):
            p.data = p.data.float()
            cast += 1
    return cast


def language_layers(model) -> list:
    """The decoder layers of the language model (works through a peft wrapper)."""
    import torch

    for name, module in model.named_modules():
        if name.endswith("language_model.layers") and isinstance(module, torch.nn.ModuleList):
            return list(module)
    raise ValueError("could not find the language model's decoder layers")


def select_checkpointed_layers(model, fraction: float) -> int:
    """Keep checkpointing on the first ``fraction`` of the decoder layers only; returns how many."""
    layers = language_layers(model)
    keep = max(1, round(fraction * len(layers)))
    for i, layer in enumerate(layers):
        if hasattr(layer, "gradient_checkpointing"):
            layer.gradient_checkpointing = i < keep
    return keep


def apply_fused_kernels(model) -> bool:
    """Liger's fused RMSNorm / SwiGLU / RoPE kernels for the Llama LM, when importable."""
    try:
        from liger_kernel.transformers import apply_liger_kernel_to_llama
    except ImportError:
        log.warning("fused_kernels: liger_kernel is not importable; using the stock kernels")
        return False
    apply_liger_kernel_to_llama(rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                fused_linear_cross_entropy=False,
                                model=model.model.language_model if hasattr(model, "model") else None)
    return True


def make_optimizer(model, cfg: TrainConfig):
    """AdamW with two groups: the projector at ``projector_lr``, everything else at ``lr``."""
    import torch

    main, proj = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (proj if PROJECTOR in name else main).append(p)
    if not main and not proj:
        raise ValueError("no trainable parameter: check method, train_projector and modules_to_save")
    groups = [g for g in ({"params": main, "lr": cfg.lr}, {"params": proj, "lr": cfg.projector_lr})
              if g["params"]]
    kwargs: dict[str, Any] = {"weight_decay": cfg.weight_decay, "betas": (0.9, 0.999), "eps": 1e-8}
    if cfg.fused_adamw and torch.cuda.is_available():
        kwargs["fused"] = True
    return torch.optim.AdamW(groups, **kwargs)


def make_scheduler(optimizer, cfg: TrainConfig, total_steps: int):
    """Linear warm-up (``warmup_ratio``), then cosine / linear decay to 0, or constant."""
    import torch

    warmup = math.ceil(cfg.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if cfg.lr_scheduler == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        if cfg.lr_scheduler == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# --- one optimizer step ------------------------------------------------------------------------

def loss_sum(model, batch: dict[str, Any]):
    """Sum of next-token cross-entropy over the supervised tokens of ``batch`` (fp32)."""
    import torch.nn.functional as F

    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                pixel_values=batch["pixel_values"], use_cache=False)
    logits = out.logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                           ignore_index=-100, reduction="sum")


def micro_batch_seed(seed: int, step: int, index: int) -> int:
    """Random seed of micro-batch ``index`` (counted over the whole global batch) of ``step``."""
    import numpy as np

    return int(np.random.SeedSequence([seed, step, index]).generate_state(1)[0])


def training_step(model, optimizer, micro_batches: Sequence[dict[str, Any]], accelerator,
                  max_grad_norm: float = 1.0, seeds: Sequence[int] | None = None) -> dict[str, float]:
    """Forward/backward every micro-batch of this process, then one optimizer step.

    The loss is the mean over the supervised tokens of the whole global batch (all
    micro-batches, all processes). Returns that loss and the number of (non-padding) tokens.
    ``seeds``: one per micro-batch, set before its forward pass, so its dropout masks depend on
    which samples it holds, not on which process runs it.
    """
    import torch

    dev = accelerator.device
    local_sup = sum(int((b["labels"][:, 1:] != -100).sum()) for b in micro_batches)
    local_tokens = sum(int(b["attention_mask"].sum()) for b in micro_batches)
    counts = torch.tensor([local_sup, local_tokens], device=dev, dtype=torch.float64)
    if accelerator.num_processes > 1:
        counts = accelerator.reduce(counts, reduction="sum")
    total_sup = float(counts[0])
    if total_sup == 0:
        raise ValueError("a global batch has no supervised token: nothing to learn from")
    scale = accelerator.num_processes / total_sup   # DDP averages gradients over processes
    running = torch.zeros((), device=dev, dtype=torch.float64)
    for i, batch in enumerate(micro_batches):
        batch = {k: v.to(dev) for k, v in batch.items()}
        last = i == len(micro_batches) - 1
        ctx = accelerator.no_sync(model) if not last and accelerator.num_processes > 1 else _null()
        if seeds is not None:
            torch.manual_seed(seeds[i])
        with ctx:
            loss = loss_sum(model, batch)
            accelerator.backward(loss * scale)
        running += loss.detach().double()
    if max_grad_norm > 0:
        accelerator.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if accelerator.num_processes > 1:
        running = accelerator.reduce(running, reduction="sum")
    return {"loss": float(running) / total_sup, "tokens": float(counts[1])}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def micro_batches_for_step(dataset, collator, cfg: TrainConfig, step: int, rank: int, world: int,
                           lengths: Sequence[int] | None) -> list[dict[str, Any]]:
    """This process's micro-batches of optimizer step ``step``."""
    idx = step_indices(len(dataset), cfg.global_batch_size, step, cfg.seed, lengths)
    mb = cfg.micro_batch_size
    out = []
    for a in range(cfg.grad_accum(world)):
        start = (a * world + rank) * mb
        out.append(collator([dataset[i] for i in idx[start:start + mb]]))
    return out


class Prefetcher:
    """``fetch(step)`` results, the next one computed in a background thread when enabled."""

    def __init__(self, fetch, enabled: bool):
        from concurrent.futures import ThreadPoolExecutor

        self.fetch, self.pending = fetch, None
        self.pool = ThreadPoolExecutor(1) if enabled else None

    def __call__(self, step: int, upcoming: int | None = None):
        if self.pool is None:
            return self.fetch(step)
        result = self.pending[1].result() if self.pending and self.pending[0] == step else self.fetch(step)
        self.pending = (upcoming, self.pool.submit(self.fetch, upcoming)) if upcoming is not None else None
        return result

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)


def evaluate_loss(model, dataset, collator, cfg: TrainConfig, accelerator) -> float:
    """Mean supervised-token loss over a whole dataset (no gradient)."""
    import torch

    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(dataset), cfg.micro_batch_size):
            batch = collator([dataset[i] for i in range(start, min(len(dataset), start + cfg.micro_batch_size))])
            n += int((batch["labels"][:, 1:] != -100).sum())
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            total += float(loss_sum(model, batch))
    model.train()
    return total / max(1, n)


# --- files -----------------------------------------------------------------------------------

def loss_csv_text(rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LOSS_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row[k] for k in LOSS_COLUMNS})
    return buf.getvalue()


def read_loss_csv(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: loss curve not found")
    with path.open() as fh:
        return [{"step": int(r["step"]), "loss": float(r["loss"]), "lr": float(r["lr"]),
                 "tokens": int(float(r["tokens"])), "seconds": float(r["seconds"])}
                for r in csv.DictReader(fh)]


def write_run_files(folder: Path, cfg: TrainConfig, rows, stats: dict[str, Any]) -> None:
    """The resolved config, the loss curve and the data statistics, side by side."""
    cfg.save(folder / "config.json")
    atomic_write_text(folder / "loss.csv", loss_csv_text(rows))
    write_json(folder / "data_stats.json", stats)


#: keys that fix the data order, the schedule or the parameter layout: a resume must keep them
RESUME_KEYS = ("method", "seed", "global_batch_size", "max_steps", "num_epochs", "lr", "projector_lr",
               "lr_scheduler", "warmup_ratio", "lora_r", "lora_alpha", "lora_targets", "modules_to_save",
               "train_projector", "freeze_vision_tower", "max_length", "max_train_samples", "group_by_length",
               "types", "image_mode", "conversation")


def check_resumable(ckpt: Path, cfg: TrainConfig, n_samples: int) -> None:
    """Refuse to resume with settings that would change the data order, schedule or parameters."""
    saved = read_json(ckpt / "config.json")
    for key in RESUME_KEYS:
        if key in saved and saved[key] != getattr(cfg, key):
            raise ValueError(f"{ckpt}: cannot resume with {key}={getattr(cfg, key)!r}; the checkpoint "
                             f"was trained with {key}={saved[key]!r}")
    state = read_json(ckpt / "trainer_state.json")
    if state.get("n_train_samples", n_samples) != n_samples:
        raise ValueError(f"{ckpt}: the training file now has {n_samples} usable samples, the "
                         f"checkpoint was trained on {state['n_train_samples']}: the data position "
                         "would not be the same")


def find_checkpoint(output_dir: str | Path, resume_from: str) -> Path | None:
    """The checkpoint folder ``resume_from`` names ('latest' = highest step), or None."""
    if not resume_from:
        return None
    if resume_from == "latest":
        found = sorted(Path(output_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
        found = [p for p in found if (p / "trainer_state.json").exists()]
        if not found:
            log.info("resume_from=latest: no checkpoint in %s, starting fresh", output_dir)
            return None
        return found[-1]
    path = Path(resume_from)
    if not (path / "trainer_state.json").exists():
        raise FileNotFoundError(f"{path}: not a checkpoint folder (no trainer_state.json)")
    return path


# --- the whole run ---------------------------------------------------------------------------

def train(cfg: TrainConfig, stop_after: int = 0) -> dict[str, Any]:
    """Run (or resume) training as ``cfg`` says; returns a summary dict (also summary.json).

    ``stop_after`` (> 0) stops after that many optimizer steps in total without changing the
    schedule: an interruption, for tests and for splitting a long run.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    from aes_lib.models import load_model_and_processor
    from aes_lib.threads import apply_thread_policy
    from aes_lib.train.launch import check_cpu_launch
    from aes_lib.train.memory import log_memory_plan

    check_cpu_launch()
    apply_thread_policy()   # half the cores by default: a busy laptop slows down, not to a crawl
    precision = resolve_precision(cfg)
    logging.getLogger("accelerate").setLevel(max(logging.WARNING, logging.getLogger("accelerate").level))
    # each call is a run of its own: accelerate keeps one mixed-precision setting per process, so a
    # notebook that trains in bf16 and then in fp32 (notebook 03's tiny contrast) starts afresh
    # (the distributed state of `accelerate launch` is kept)
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    accelerator = Accelerator(mixed_precision="bf16" if precision == "bf16" else "no",
                              cpu=multi_cpu_launch())
    main, rank, world = accelerator.is_main_process, accelerator.process_index, accelerator.num_processes
    accum = cfg.grad_accum(world)
    out = Path(cfg.output_dir)
    all_records = read_llava_json(cfg.train_file)
    records = select_types(all_records, cfg.types, cfg.train_file)
    if cfg.max_train_samples:
        records = records[:cfg.max_train_samples]
    records = apply_mcq_form(records, cfg.mcq_form, cfg.train_file)
    with accelerator.main_process_first():  # the tiny tokenizer learns every record's words
        base = prepare_base_model(cfg, all_records)
    set_seed(cfg.seed)
    # LoRA: frozen base in bf16, trained tensors cast to fp32 by apply_method; full: fp32 masters
    dtype = "bf16" if precision == "bf16" and cfg.method == "lora" else "fp32"
    model, processor = load_model_and_processor(base, dtype=dtype, image_mode=cfg.image_mode,
                                                conversation=cfg.conversation,
                                                attn_implementation=cfg.attn_implementation)
    # '' means the model folder's own format: record what was resolved (config.json, resume checks)
    cfg.image_mode, cfg.conversation = (input_format_of(processor)[k] for k in ("image_mode", "conversation"))
    dataset = LlavaDataset(processor, records, cfg.image_root, cfg.max_length, cfg.train_file,
                           cfg.max_dropped_fraction)
    stats = dataset.stats.to_dict()
    val_set = None
    if cfg.val_file and Path(cfg.val_file).exists():
        val_records = apply_mcq_form(read_llava_json(cfg.val_file, cfg.max_val_samples), cfg.mcq_form,
                                     cfg.val_file)
        val_set = LlavaDataset(processor, val_records, cfg.image_root,
                               cfg.max_length, cfg.val_file, 1.0)
        stats["val"] = val_set.stats.to_dict()
    elif cfg.val_file:
        log.warning("val_file %s not found: no validation loss, no samples", cfg.val_file)
    per_epoch = len(dataset) // cfg.global_batch_size
    total = cfg.max_steps or max(1, math.floor(per_epoch * cfg.num_epochs))
    step_indices(len(dataset), cfg.global_batch_size, 0, cfg.seed)  # fails early when too few samples
    model = apply_method(model, cfg)
    model.train()
    memory_estimate = log_memory_plan(model, accelerator, cfg.method)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, total)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    collator = Collator(processor.tokenizer.pad_token_id)
    lengths = dataset.lengths() if cfg.group_by_length else None

    start, rows, elapsed, tokens = 0, [], 0.0, 0
    ckpt = find_checkpoint(out, cfg.resume_from)
    if ckpt is not None:
        check_resumable(ckpt, cfg, len(dataset))
        accelerator.load_state(str(ckpt / "state"))
        state = read_json(ckpt / "trainer_state.json")
        start, elapsed, tokens = state["step"], state["seconds"], state["tokens"]
        rows = read_loss_csv(ckpt / "loss.csv")
        log.info("resumed from %s at step %d", ckpt, start)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "config.json")
        write_json(out / "data_stats.json", stats)
    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("%s fine-tuning: %d of %d parameters trainable; %d steps of %d samples (%d x %d x %d "
             "accumulation), %s on %s", cfg.method, n_train, n_params, total, cfg.global_batch_size,
             cfg.micro_batch_size, world, accum, precision, accelerator.device)

    samples = _samples(cfg, out, model, processor, accelerator, "before", start == 0)
    summary: dict[str, Any] = {"method": cfg.method, "base_model": base, "precision": precision,
                               "num_processes": world, "grad_accum": accum, "total_steps": total,
                               "trainable_parameters": n_train, "parameters": n_params,
                               "memory_estimate_gib": round(memory_estimate.total / 2 ** 30, 3),
                               "input_format": input_format_of(processor)}
    if val_set is not None and start == 0:
        summary["val_loss_before"] = evaluate_loss(model, val_set, collator, cfg, accelerator)
    end = min(total, stop_after) if stop_after else total
    bar = tqdm(total=total, initial=start, desc="train", disable=not (main and cfg.progress),
               unit="step", dynamic_ncols=True)
    # on a GPU the next step's images are decoded in a thread while this step computes
    batches_of = Prefetcher(lambda k: micro_batches_for_step(dataset, collator, cfg, k, rank, world, lengths),
                            enabled=accelerator.device.type == "cuda")
    for step in range(start, end):
        t0 = time.perf_counter()
        batches = batches_of(step, upcoming=step + 1 if step + 1 < end else None)
        lr = scheduler.get_last_lr()[0]
        seeds = [micro_batch_seed(cfg.seed, step, a * world + rank) for a in range(accum)]
        result = training_step(model, optimizer, batches, accelerator, cfg.max_grad_norm, seeds)
        scheduler.step()
        dt = time.perf_counter() - t0
        elapsed += dt
        tokens += int(result["tokens"])
        rows.append({"step": step + 1, "loss": round(result["loss"], 6), "lr": lr, "tokens": tokens,
                     "seconds": round(elapsed, 3)})
        bar.update(1)
        bar.set_postfix(loss=f"{result['loss']:.3f}", tok_s=f"{result['tokens'] / dt:,.0f}")
        if not math.isfinite(result["loss"]):
            raise FloatingPointError(f"step {step + 1}: loss is {result['loss']} (lower lr?)")
        if val_set is not None and cfg.val_every and (step + 1) % cfg.val_every == 0:
            log.info("step %d: validation loss %.4f", step + 1,
                     evaluate_loss(model, val_set, collator, cfg, accelerator))
        if (cfg.save_every and (step + 1) % cfg.save_every == 0) or step + 1 == end:
            save_checkpoint(accelerator, model, processor, cfg, out, step + 1, rows, stats,
                            elapsed, tokens)
    bar.close()
    batches_of.close()
    summary.update(steps_done=end, seconds=round(elapsed, 3), tokens=tokens,
                   first_loss=rows[0]["loss"] if rows else None,
                   last_loss=rows[-1]["loss"] if rows else None)
    if end < total:
        log.info("stopped after step %d of %d (resume with resume_from='latest')", end, total)
        return summary
    if val_set is not None:
        summary["val_loss_after"] = evaluate_loss(model, val_set, collator, cfg, accelerator)
    samples = _samples(cfg, out, model, processor, accelerator, "after", True, samples)
    accelerator.wait_for_everyone()
    if main:
        finish(accelerator.unwrap_model(model), processor, cfg, out, base, rows, stats)
        summary["outputs"] = sorted(p.name for p in out.iterdir())
        write_json(out / "summary.json", summary)
    accelerator.wait_for_everyone()
    return summary


def save_checkpoint(accelerator, model, processor, cfg, out: Path, step: int, rows, stats,
                    seconds: float, tokens: int) -> Path:
    """checkpoint-N/: accelerate state (model, optimizer, scheduler, RNG), the step, run files."""
    folder = out / f"checkpoint-{step}"
    accelerator.save_state(str(folder / "state"))
    if accelerator.is_main_process:
        write_run_files(folder, cfg, rows, stats)
        if cfg.method == "lora":
            accelerator.unwrap_model(model).save_pretrained(folder / "adapter")
            write_input_format(folder / "adapter", processor)
        write_json(folder / "trainer_state.json", {"step": step, "seconds": seconds, "tokens": tokens,
                                                   "n_train_samples": stats["n_kept"]})
        if cfg.keep_checkpoints:
            old = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
            for p in old[:-cfg.keep_checkpoints]:
                shutil.rmtree(p)
    accelerator.wait_for_everyone()
    return folder


def finish(model, processor, cfg: TrainConfig, out: Path, base: str, rows, stats) -> None:
    """Final adapter and/or standalone model, and the run files beside them."""
    write_run_files(out, cfg, rows, stats)
    if cfg.method == "lora":
        model.save_pretrained(out / "adapter")
        save_processor(processor, out / "adapter")
        if cfg.merge:
            merge_adapter(base, out / "adapter", out / "merged")
    else:
        model.save_pretrained(out / "merged")
        save_processor(processor, out / "merged")
    log.info("training outputs in %s", out)


def merge_adapter(base: str | Path, adapter: str | Path, out_dir: str | Path) -> Path:
    """Fold a LoRA adapter (and its modules_to_save) into its base: a standalone model folder.

    The processor goes with it in the adapter's input format (``input_format.json``).
    """
    from aes_lib.models import load_model_and_processor, save_processor

    model, processor = load_model_and_processor(base, adapter=adapter)
    merged = model.merge_and_unload()
    out_dir = Path(out_dir)
    merged.save_pretrained(out_dir)
    save_processor(processor, out_dir)
    log.info("merged %s into %s -> %s", adapter, base, out_dir)
    return out_dir


def pick_samples(records: Sequence[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """``n`` records, one per instruction type first (in file order), then the next ones."""
    first, rest, seen = [], [], set()
    for rec in records:
        (rest if rec.get("type") in seen else first).append(rec)
        seen.add(rec.get("type"))
    return (first + rest)[:n]


def _samples(cfg, out: Path, model, processor, accelerator, when: str, compute: bool,
             before: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Answers to the first ``n_samples`` validation questions, 'before' or 'after' training."""
    from aes_lib.models import generate_answers

    if not cfg.n_samples or not cfg.val_file or not Path(cfg.val_file).exists() \
            or not accelerator.is_main_process:
        return before or []
    path = out / ("samples_before.json" if when == "before" else "samples.json")
    if when == "before" and not compute:
        return read_json(path) if path.exists() else []
    items = pick_samples(read_llava_json(cfg.val_file), cfg.n_samples)
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.eval()
    with accelerator.autocast():   # bf16 runs keep trained tensors in fp32: mix them as training does
        answers = generate_answers(unwrapped, processor, items, cfg.sample_max_new_tokens, cfg.image_root)
    unwrapped.train()
    if when == "before":
        rows = [{"id": it["id"], "image": it["image"], "type": it.get("type", ""),
                 "question": it["conversations"][0]["value"].replace("<image>", "").strip(),
                 "reference": it["conversations"][1]["value"], "before": a}
                for it, a in zip(items, answers)]
        write_json(path, rows)
        return rows
    rows = [{**b, "after": a} for b, a in zip(before or [{} for _ in items], answers)]
    write_json(path, rows)
    return rows

"""Training throughput: the project's training step against a plain transformers + peft step.

    PYTHONPATH=. python bench/train_throughput.py --shape tiny          # CPU, seconds
    PYTHONPATH=. python bench/train_throughput.py --shape llava-7b      # one GPU (see docs/train.md)

Both steps train the same randomly initialised model (LoRA on every linear layer of the
language model, projector trained, vision tower frozen) on the same synthetic batches, in one
run. Printed per configuration: seconds per step, tokens/s, model TFLOP/s and utilisation of a
matrix-product peak measured in the same run (bf16 on a GPU, fp32 on the CPU).

Model FLOPs per step = tokens x 3 x (2 x non-embedding LM parameters + 4 x layers x hidden x
sequence) + images x (2 x vision parameters x patches + 4 x layers x width x patches^2): the
language model's forward and backward, attention included, plus the frozen vision tower's
forward (the projector and LoRA's own FLOPs are not counted). ``lm_head`` counts as a
non-embedding parameter; the input embedding does not.

The project's step is ``aes_lib.train.training_step`` on a model prepared by
``aes_lib.train.apply_method`` (the code ``aes train`` runs); its speed levers are flags:
``--lora-dropout``, ``--checkpointing {off,full,selective}``, ``--checkpoint-fraction``,
``--attn``, ``--fused-adamw``, ``--compile``, ``--fused-kernels``, ``--micro-batch``. ``--variant``
adds more project configurations to the same run (e.g. ``--variant micro_batch=8,checkpointing=off``).
Needs only torch, transformers, peft, accelerate and ``aes_lib`` on the path.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("train_throughput")


@dataclass
class Shape:
    name: str
    image_size: int
    patch: int
    v_width: int
    v_layers: int
    v_heads: int
    v_inter: int
    width: int
    layers: int
    heads: int
    inter: int
    vocab: int
    seq: int              # tokens per sample, image tokens included
    lora_r: int
    batch_plain: int      # the plain default's batch


SHAPES = {
    # LLaVA-1.5-7B: CLIP ViT-L/14 at 336 px (24 layers), Llama-2-7B LM, 833-token samples (576 image)
    "llava-7b": Shape("llava-7b", 336, 14, 1024, 24, 16, 4096, 4096, 32, 32, 11008, 32064, 833, 128, 16),
    # the project's tiny LLaVA (aes_lib.models.TinyLlavaShape), 96-token samples (16 image)
    "tiny": Shape("tiny", 64, 16, 64, 2, 4, 256, 128, 2, 4, 256, 1024, 96, 16, 8),
}


@dataclass
class Variant:
    micro_batch: int
    lora_dropout: float = 0.0
    checkpointing: str = "off"          # off | full | selective
    checkpoint_fraction: float = 0.5
    attn: str = "sdpa"
    fused_adamw: bool = True
    compile: bool = False
    fused_kernels: bool = False

    def label(self) -> str:
        parts = [f"batch {self.micro_batch}", f"dropout {self.lora_dropout:g}",
                 "ckpt " + (self.checkpointing if self.checkpointing != "selective"
                            else f"{self.checkpoint_fraction:g}"), self.attn]
        parts += ["fused-adamw"] * self.fused_adamw + ["compile"] * self.compile + ["liger"] * self.fused_kernels
        return ", ".join(parts)


def build_model(shape: Shape, device, dtype):
    """A LLaVA of the given shape with random weights, built directly on ``device`` in ``dtype``."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(hidden_size=shape.v_width, intermediate_size=shape.v_inter,
                              num_hidden_layers=shape.v_layers, num_attention_heads=shape.v_heads,
                              image_size=shape.image_size, patch_size=shape.patch,
                              projection_dim=shape.v_width)
    text = LlamaConfig(vocab_size=shape.vocab, hidden_size=shape.width, intermediate_size=shape.inter,
                       num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                       num_key_value_heads=shape.heads, max_position_embeddings=4096,
                       tie_word_embeddings=False, pad_token_id=0)
    n_img = (shape.image_size // shape.patch) ** 2
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=shape.vocab - 1,
                         image_seq_length=n_img, vision_feature_select_strategy="default",
                         vision_feature_layer=-2)
    config.text_config._attn_implementation = "sdpa"
    config.vision_config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlavaForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    return model.to(device=device, dtype=dtype)


def synthetic_batch(shape: Shape, batch: int, device, dtype, seed: int = 0) -> dict[str, Any]:
    """Samples of ``shape.seq`` tokens: <s>, the image tokens, a question, a supervised answer."""
    import torch

    g = torch.Generator().manual_seed(seed)
    n_img = (shape.image_size // shape.patch) ** 2
    ids = torch.randint(1, shape.vocab - 2, (batch, shape.seq), generator=g)
    ids[:, 0] = 1
    ids[:, 1:1 + n_img] = shape.vocab - 1
    labels = ids.clone()
    answer = max(1, (shape.seq - n_img) // 3)
    labels[:, :shape.seq - answer] = -100
    pixels = torch.randn(batch, 3, shape.image_size, shape.image_size, generator=g)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
            "labels": labels.to(device), "pixel_values": pixels.to(device=device, dtype=dtype)}


def model_flops_per_sample(model, shape: Shape) -> float:
    """Model FLOPs of one training sample (see the module docstring)."""
    lm, vt = model.model.language_model, model.model.vision_tower
    n_lm = sum(p.numel() for p in lm.parameters()) - lm.embed_tokens.weight.numel()
    n_lm += model.lm_head.weight.numel()
    n_vis = sum(p.numel() for p in vt.parameters())
    patches = (shape.image_size // shape.patch) ** 2 + 1
    lm_flops = shape.seq * 3 * (2 * n_lm + 4 * shape.layers * shape.width * shape.seq)
    vis_flops = 2 * n_vis * patches + 4 * shape.v_layers * shape.v_width * patches ** 2
    return float(lm_flops + vis_flops)


def matmul_peak(device, dtype, seconds: float | None = None) -> float:
    """Measured matrix-product throughput in TFLOP/s (best of a few timed bursts)."""
    import torch

    n = 8192 if device.type == "cuda" else 512
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    seconds = seconds or (2.0 if device.type == "cuda" else 0.5)
    best, t_end = 0.0, time.perf_counter() + seconds
    reps = 20 if device.type == "cuda" else 4
    while time.perf_counter() < t_end:
        sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(device)
        best = max(best, reps * 2 * n ** 3 / (time.perf_counter() - t0) / 1e12)
    return best


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def lora_targets_regex() -> str:
    from aes_lib.train.loop import lora_target_regex
    from aes_lib.train.config import TrainConfig

    return lora_target_regex(TrainConfig().lora_targets)


def time_steps(step_fn, device, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step_fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step_fn()
    sync(device)
    return (time.perf_counter() - t0) / steps


def run_plain(model, shape: Shape, device, dtype, warmup: int, steps: int) -> tuple[float, int]:
    """transformers + peft defaults: LoRA dropout 0.05, gradient checkpointing, AdamW, autocast."""
    import torch
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=shape.lora_r, lora_alpha=2 * shape.lora_r, lora_dropout=0.05,
                     target_modules=lora_targets_regex(), modules_to_save=["multi_modal_projector"])
    model.gradient_checkpointing_enable()
    model.enable_input_require_grads()
    peft_model = get_peft_model(model, cfg)
    peft_model.train()
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=2e-4)
    batch = synthetic_batch(shape, shape.batch_plain, device, dtype)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)

    def step():
        with amp:
            loss = peft_model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    try:
        return time_steps(step, device, warmup, steps), shape.batch_plain
    finally:
        opt = None  # noqa: F841  (frees the optimizer state before the next configuration)
        base = peft_model.unload()
        base.gradient_checkpointing_disable()
        base.disable_input_require_grads()


def run_project(model, shape: Shape, variant: Variant, device, dtype, warmup: int, steps: int
                ) -> tuple[float, int]:
    """The project's step: aes_lib.train.apply_method + make_optimizer + training_step."""
    from accelerate import Accelerator

    from aes_lib.train import TrainConfig, apply_method, make_optimizer, training_step

    cfg = TrainConfig.from_dict(dict(
        model=f"random-weight {shape.name} shape", method="lora", lora_r=shape.lora_r, lora_alpha=2 * shape.lora_r,
        lora_dropout=variant.lora_dropout, gradient_checkpointing=variant.checkpointing != "off",
        checkpoint_fraction=1.0 if variant.checkpointing == "full" else variant.checkpoint_fraction,
        attn_implementation=variant.attn, fused_adamw=variant.fused_adamw,
        torch_compile=variant.compile, fused_kernels=variant.fused_kernels,
        global_batch_size=variant.micro_batch, micro_batch_size=variant.micro_batch,
        precision="bf16" if dtype.is_floating_point and dtype.itemsize == 2 else "fp32"))
    model.config.text_config._attn_implementation = variant.attn
    accelerator = Accelerator(mixed_precision="bf16" if cfg.precision == "bf16" else "no",
                              cpu=device.type == "cpu")
    peft_model = apply_method(model, cfg)
    peft_model.train()
    opt = make_optimizer(peft_model, cfg)
    prepared, opt = accelerator.prepare(peft_model, opt)
    batch = synthetic_batch(shape, variant.micro_batch, device, dtype)

    def step():
        training_step(prepared, opt, [batch], accelerator, cfg.max_grad_norm)

    try:
        return time_steps(step, device, warmup, steps), variant.micro_batch
    finally:
        opt = prepared = None  # noqa: F841
        accelerator.free_memory()
        base = peft_model.unload()
        if cfg.gradient_checkpointing:
            base.gradient_checkpointing_disable()


def parse_variant(text: str, base: Variant) -> Variant:
    fields = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if key not in Variant.__dataclass_fields__:
            raise SystemExit(f"--variant {text!r}: unknown key {key!r} (known: {', '.join(Variant.__dataclass_fields__)})")
        typ = type(getattr(base, key))
        fields[key] = (value.lower() in ("1", "true", "yes", "on")) if typ is bool else typ(value)
    return replace(base, **fields)


def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    ap.add_argument("--tiny", action="store_true", help="same as --shape tiny")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per configuration")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first")
    ap.add_argument("--micro-batch", type=int, default=None, help="project step batch (default: 8 GPU, 8 CPU)")
    ap.add_argument("--lora-dropout", type=float, default=0.0)
    ap.add_argument("--checkpointing", choices=("off", "full", "selective"), default=None)
    ap.add_argument("--checkpoint-fraction", type=float, default=0.5)
    ap.add_argument("--attn", default="sdpa", choices=("sdpa", "eager", "flash_attention_2"))
    ap.add_argument("--fused-adamw", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--fused-kernels", action="store_true")
    ap.add_argument("--variant", action="append", default=[], help="extra project configuration(s): key=value,...")
    ap.add_argument("--skip-plain", action="store_true")
    ap.add_argument("--json-out", help="also write the figures as JSON")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("accelerate", "transformers", "peft"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    shape = SHAPES["tiny" if args.tiny else args.shape]
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    if shape.name == "llava-7b" and not cuda:
        raise SystemExit("--shape llava-7b needs a GPU (a 7B model does not train on this CPU); use --shape tiny")
    steps = args.steps or (5 if cuda else 3)
    warmup = args.warmup if args.warmup is not None else (2 if cuda else 1)
    default_ckpt = args.checkpointing or ("selective" if shape.name == "llava-7b" else "off")
    base = Variant(micro_batch=args.micro_batch or 8, lora_dropout=args.lora_dropout,
                   checkpointing=default_ckpt, checkpoint_fraction=args.checkpoint_fraction,
                   attn=args.attn, fused_adamw=args.fused_adamw and cuda, compile=args.compile,
                   fused_kernels=args.fused_kernels)
    variants = [base] + [parse_variant(v, base) for v in args.variant]

    versions = {m: __import__(m).__version__ for m in ("torch", "transformers", "peft", "accelerate")}
    card = torch.cuda.get_device_name(0) if cuda else f"CPU ({torch.get_num_threads()} threads)"
    peak = matmul_peak(device, dtype)
    log.info("device: %s; %s; matmul peak %s measured: %.1f TFLOP/s", card,
             ", ".join(f"{k} {v}" for k, v in versions.items()), str(dtype).replace("torch.", ""), peak)
    t0 = time.perf_counter()
    model = build_model(shape, device, dtype)
    flops = model_flops_per_sample(model, shape)
    log.info("shape %s: %.4g M parameters, %d tokens/sample (%d image), %.4g GFLOP per sample; built in %.0f s",
             shape.name, sum(p.numel() for p in model.parameters()) / 1e6, shape.seq,
             (shape.image_size // shape.patch) ** 2, flops / 1e9, time.perf_counter() - t0)

    runs: list[tuple[str, Any]] = []
    if not args.skip_plain:
        runs.append((f"plain transformers+peft (dropout 0.05, checkpointing, batch {shape.batch_plain})",
                     lambda: run_plain(model, shape, device, dtype, warmup, steps)))
    for v in variants:
        runs.append((f"project ({v.label()})",
                     lambda v=v: run_project(model, shape, v, device, dtype, warmup, steps)))
    results = []
    for name, fn in runs:
        row: dict[str, Any] = {"config": name}
        try:
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            sec, batch = fn()
            tflops = batch * flops / sec / 1e12
            row.update(batch=batch, s_per_step=round(sec, 4), tokens_per_s=round(batch * shape.seq / sec, 1),
                       model_tflops=round(tflops, 6), utilisation=round(tflops / peak, 4))
            if cuda:
                row["peak_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 1)
        except torch.cuda.OutOfMemoryError as e:  # report and go on with the next configuration
            row["error"] = f"out of memory ({str(e).splitlines()[0][:80]})"
        except Exception as e:  # noqa: BLE001  (a lever that fails must not hide the others' figures)
            row["error"] = f"{type(e).__name__}: {e}"[:300]
        finally:
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
        results.append(row)
        if "error" in row:
            log.info("%-70s %s", name, row["error"])
        else:
            log.info("%-70s %7.3f s/step %9.0f tokens/s %8.2f TFLOP/s %6.1f%% of peak%s", name,
                     row["s_per_step"], row["tokens_per_s"], row["model_tflops"], 100 * row["utilisation"],
                     f"  {row['peak_mem_gb']} GB" if "peak_mem_gb" in row else "")
    report = {"shape": shape.name, "device": card, "dtype": str(dtype).replace("torch.", ""),
              "versions": versions, "matmul_peak_tflops": round(peak, 2), "steps": steps,
              "warmup": warmup, "flops_per_sample": flops, "tokens_per_sample": shape.seq,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "results": results}
    print(json.dumps(report, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

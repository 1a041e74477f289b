#!/usr/bin/env python
"""Benchmark-scoring throughput: option likelihood against plain ``generate`` at batch 1.

One run, one model, the same questions. The model is built from a config with random weights
(``--shape tiny`` on the CPU in the test suite; ``--shape llava-7b``: CLIP ViT-L/14 at 336 px
with 24 layers + a Llama-2-7B-shaped language model, 32 layers, hidden 4096, vocabulary 32,064,
in bf16 on the GPU). Prompts are random token ids laid out like a LLaVA-v1 AesBench prompt:
BOS + system text + "USER: " + the image tokens (576 for the 7B shape), then a question with
its options and "ASSISTANT:". Each image carries ``--questions-per-image`` questions (AesBench
asks three multiple-choice questions per image). Image decoding and resizing are left out for
every method alike.

Methods, all timed in this one run (questions per second, higher is better):

* ``generate`` -- plain ``model.generate`` at batch 1, greedy, ``--max-new-tokens`` tokens;
* ``likelihood (batched)`` -- :func:`aes_lib.evaluate.likelihood.score_shared_prefix` with every
  question as its own prefix: one forward per question scores every option, questions batched;
* ``likelihood (shared prefix)`` -- the project's scorer: each image's prefix runs once, its
  cache is copied to that image's questions, only the question suffixes run again.

Needs only torch + transformers and ``PYTHONPATH=.``; prints one line per method and a JSON
summary (``--json-out FILE`` writes it too). Exact GPU command: see docs/evaluate.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES = {
    "tiny": dict(image_size=64, patch_size=16, vision_width=64, vision_layers=2, vision_heads=4,
                 vision_intermediate=256, text_width=128, text_layers=2, text_heads=4,
                 text_intermediate=256, vocab_size=1024, system_tokens=8, question_tokens=24),
    "llava-7b": dict(image_size=336, patch_size=14, vision_width=1024, vision_layers=24,
                     vision_heads=16, vision_intermediate=4096, text_width=4096, text_layers=32,
                     text_heads=32, text_intermediate=11008, vocab_size=32064,
                     system_tokens=35, question_tokens=64),
}


def build_model(shape: dict, device: str, dtype, seed: int):
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vocab = shape["vocab_size"]
    image_token = vocab - 64  # inside the vocabulary, like llava-hf's <image> (32000 of 32064)
    n_img = (shape["image_size"] // shape["patch_size"]) ** 2
    vision = CLIPVisionConfig(hidden_size=shape["vision_width"], intermediate_size=shape["vision_intermediate"],
                              num_hidden_layers=shape["vision_layers"], num_attention_heads=shape["vision_heads"],
                              image_size=shape["image_size"], patch_size=shape["patch_size"],
                              projection_dim=768)
    text = LlamaConfig(vocab_size=vocab, hidden_size=shape["text_width"],
                       intermediate_size=shape["text_intermediate"], num_hidden_layers=shape["text_layers"],
                       num_attention_heads=shape["text_heads"], num_key_value_heads=shape["text_heads"],
                       max_position_embeddings=4096, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                       tie_word_embeddings=False)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=image_token,
                         image_seq_length=n_img, vision_feature_select_strategy="default",
                         vision_feature_layer=-2, projector_hidden_act="gelu", tie_word_embeddings=False)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlavaForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(old)
    model.eval()
    model.generation_config.eos_token_id = None   # random weights: always the full answer length
    model.generation_config.pad_token_id = 0
    return model, image_token, n_img


def make_questions(shape: dict, n_images: int, per_image: int, image_token: int, n_img: int,
                   n_options: int, seed: int):
    """Per image: the prefix ids (BOS, system, USER:, image tokens) and its question suffixes."""
    import torch

    g = torch.Generator().manual_seed(seed)
    lo, hi = 100, image_token - 1
    rand = lambda n: torch.randint(lo, hi, (n,), generator=g).tolist()  # noqa: E731
    letters = rand(n_options)
    system = [1] + rand(shape["system_tokens"])
    images = []
    for _ in range(n_images):
        prefix = system + [image_token] * n_img
        suffixes = [rand(shape["question_tokens"] - 4 + int(torch.randint(0, 9, (1,), generator=g)))
                    for _ in range(per_image)]
        images.append((prefix, suffixes))
    return images, letters


def run_likelihood(model, images, letters, pixel, batch_images: int, shared: bool, device: str):
    """Questions scored; returns (seconds, list of option log-probs)."""
    import torch

    from aes_lib.evaluate.likelihood import Row, score_shared_prefix

    out = []
    units = []  # (prefix, [suffixes], image index) per forward "owner"
    for k, (prefix, suffixes) in enumerate(images):
        if shared:
            units.append((prefix, suffixes, k))
        else:
            units += [(prefix, [s], k) for s in suffixes]
    per_batch = batch_images if shared else batch_images * max(1, len(images[0][1]))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for start in range(0, len(units), per_batch):
        chunk = units[start:start + per_batch]
        prefix_ids = torch.tensor([u[0] for u in chunk])
        rows = [Row(owner=i, suffix=s, candidates=letters) for i, u in enumerate(chunk) for s in u[1]]
        pix = pixel[torch.tensor([u[2] % len(pixel) for u in chunk], device=pixel.device)]
        out += score_shared_prefix(model, prefix_ids, pix, rows, pad_id=0)
    sync()
    return time.perf_counter() - t0, out


def run_generate(model, images, pixel, max_new_tokens: int, n: int, device: str):
    import torch

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    done = 0
    sync()
    t0 = time.perf_counter()
    for prefix, suffixes in images:
        for s in suffixes:
            if done >= n:
                break
            ids = torch.tensor([prefix + s], device=device)
            with torch.inference_mode():
                model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixel[:1],
                               max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, do_sample=False)
            done += 1
    sync()
    return time.perf_counter() - t0, done


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    ap.add_argument("--tiny", action="store_true", help="same as --shape tiny")
    ap.add_argument("--device", default="", help="default: cuda when available, else cpu")
    ap.add_argument("--dtype", default="", help="default: bfloat16 on cuda, float32 on cpu")
    ap.add_argument("--images", type=int, default=64, help="images scored by the likelihood methods")
    ap.add_argument("--questions-per-image", type=int, default=3)
    ap.add_argument("--options", type=int, default=4)
    ap.add_argument("--batch-images", type=int, default=16, help="images per likelihood forward")
    ap.add_argument("--generate-questions", type=int, default=24, help="questions answered by generate")
    ap.add_argument("--max-new-tokens", type=int, default=8, help="generate: tokens per answer")
    ap.add_argument("--warmup", type=int, default=1, help="untimed warm-up passes of each method")
    ap.add_argument("--text-layers", type=int, default=0, help="override the shape's LM layers (checks)")
    ap.add_argument("--vision-layers", type=int, default=0, help="override the vision layers (checks)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json-out", "--json", dest="json", default="",
                    help="also write the summary here (as the other benches; --json is an alias)")
    args = ap.parse_args(argv)

    import torch
    import transformers

    shape_name = "tiny" if args.tiny else args.shape
    shape = dict(SHAPES[shape_name])
    if args.text_layers:
        shape["text_layers"] = args.text_layers
    if args.vision_layers:
        shape["vision_layers"] = args.vision_layers
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    torch.set_grad_enabled(False)
    t0 = time.perf_counter()
    model, image_token, n_img = build_model(shape, device, dtype, args.seed)
    build_s = time.perf_counter() - t0
    images, letters = make_questions(shape, args.images, args.questions_per_image, image_token, n_img,
                                     args.options, args.seed)
    g = torch.Generator().manual_seed(args.seed)
    pixel = torch.randn((args.batch_images, 3, shape["image_size"], shape["image_size"]), generator=g)
    pixel = pixel.to(device=device, dtype=dtype)
    n_q = sum(len(s) for _, s in images)
    prompt_len = sum(len(p) + len(s) for p, ss in images for s in ss) / n_q

    for _ in range(args.warmup):
        run_likelihood(model, images[: args.batch_images], letters, pixel, args.batch_images, True, device)
        run_likelihood(model, images[: args.batch_images], letters, pixel, args.batch_images, False, device)
        run_generate(model, images[:1], pixel, args.max_new_tokens, 1, device)
    t_shared, scores_shared = run_likelihood(model, images, letters, pixel, args.batch_images, True, device)
    t_batched, scores_batched = run_likelihood(model, images, letters, pixel, args.batch_images, False, device)
    t_gen, n_gen = run_generate(model, images, pixel, args.max_new_tokens, args.generate_questions, device)
    diff = max(abs(a - b) for x, y in zip(scores_shared, scores_batched) for a, b in zip(x, y))
    agree = sum(max(range(len(x)), key=x.__getitem__) == max(range(len(y)), key=y.__getitem__)
                for x, y in zip(scores_shared, scores_batched)) / n_q

    summary = {
        "shape": shape_name, "text_layers": shape["text_layers"], "vision_layers": shape["vision_layers"],
        "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else
        f"cpu ({platform.processor() or platform.machine()})", "dtype": str(dtype).replace("torch.", ""),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "parameters": sum(p.numel() for p in model.parameters()), "build_seconds": round(build_s, 2),
        "image_tokens": n_img, "mean_prompt_tokens": round(prompt_len, 1), "options": args.options,
        "questions_per_image": args.questions_per_image, "batch_images": args.batch_images,
        "generate": {"questions": n_gen, "seconds": round(t_gen, 3), "batch": 1,
                     "max_new_tokens": args.max_new_tokens,
                     "questions_per_second": round(n_gen / t_gen, 3)},
        "likelihood_batched": {"questions": n_q, "seconds": round(t_batched, 3),
                               "questions_per_second": round(n_q / t_batched, 3)},
        "likelihood_shared_prefix": {"questions": n_q, "seconds": round(t_shared, 3),
                                     "questions_per_second": round(n_q / t_shared, 3)},
        "max_abs_logprob_diff_shared_vs_batched": round(diff, 5),
        "argmax_agreement_shared_vs_batched": round(agree, 4),
        "peak_gpu_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.startswith("cuda") else None,
        "label": "measured by this run (random weights)",
    }
    print(f"shape {shape_name} on {summary['device']} ({summary['dtype']}), "
          f"{summary['parameters'] / 1e6:.1f} M parameters, {n_img} image tokens, "
          f"{prompt_len:.0f} prompt tokens per question, {args.questions_per_image} questions per image")
    print(f"generate (batch 1, {args.max_new_tokens} new tokens): "
          f"{summary['generate']['questions_per_second']:.2f} questions/s ({n_gen} questions)")
    print(f"likelihood, batched ({args.batch_images * args.questions_per_image} questions per forward): "
          f"{summary['likelihood_batched']['questions_per_second']:.2f} questions/s ({n_q} questions)")
    print(f"likelihood, shared image prefix ({args.batch_images} images per forward): "
          f"{summary['likelihood_shared_prefix']['questions_per_second']:.2f} questions/s ({n_q} questions)")
    print(f"shared vs batched: max |log-prob difference| {diff:.2e}, same pick on {agree:.1%} of questions")
    print(json.dumps(summary))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    main()

"""The small pretrained LLaVA's two stages, scored on the VALIDATION photos only.

Choosing the recipe of the small model (steps, learning rates, the form multiple-choice records are
trained in) happens here, on the val split; the test split is scored once, by notebook 04. The
script reuses an output folder of notebooks 00-02 (``aes reproduce --only 00 01 02 --out DIR``),
builds the model, runs stage 1 (content alignment) and stage 2 (AesMMIT instructions), and scores
the base (stage 1) and the fine-tuned model on the val benchmark's AesP degradation items and AesA,
in the letter format and the cloze formulation, beside each model's shuffled-image control and the
blind answer prior. It prints accuracies and paired differences with bootstrap 95% intervals.

    PYTHONPATH=. python bench/small_llava_val.py --data DIR --work /tmp/small_val \
        [--stage1-steps 60] [--stage2-steps 150] [--mcq-form both] [--lr 1e-3]

Times are wall-clock on this machine at the moment of the run; the model's threads follow
``AES_TORCH_THREADS`` (half the cores by default).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path


def stage_config(base: str, train_file: Path, val_file: Path, image_root: Path, out: Path, steps: int,
                 args, mcq_form: str, types: list[str]) -> dict:
    return dict(model=base, base_model_dir=str(Path(args.work) / "small_base"), train_file=str(train_file), val_file=str(val_file), image_root=str(image_root),
                output_dir=str(out), method="lora", lora_r=args.lora_r, lora_alpha=2 * args.lora_r,
                lora_dropout=0.0, lora_targets=args.lora_targets, modules_to_save=[],
                lr=args.lr, projector_lr=args.projector_lr, max_steps=steps,
                global_batch_size=args.batch, micro_batch_size=args.batch, max_length=256,
                save_every=0, n_samples=0, max_val_samples=64, precision=args.precision,
                mcq_form=mcq_form, types=types, seed=args.seed, progress=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="output folder of notebooks 00-02")
    ap.add_argument("--work", default="/tmp/small_val", help="scratch folder")
    ap.add_argument("--stage1-steps", type=int, default=60)
    ap.add_argument("--stage2-steps", type=int, default=150)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--stage1-lr", type=float, default=None, help="stage 1's LoRA lr (default: --lr)")
    ap.add_argument("--projector-lr", type=float, default=1e-3)
    ap.add_argument("--lora-r", type=int, default=8)
    ap.add_argument("--lora-targets", nargs="+", default=["q_proj", "v_proj"])
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--mcq-form", default="both", choices=("letter", "cloze", "both"))
    ap.add_argument("--stage2-types", nargs="*", default=[])
    ap.add_argument("--modes", nargs="+", default=["cloze", "first-token"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--no-base-shuffled", action="store_true", help="skip the base model's shuffled control")
    ap.add_argument("--reuse", action="store_true", help="reuse models already trained in --work")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from aes_lib.evaluate import EvalConfig, evaluate_model
    from aes_lib.evaluate.controls import degradation_differences, evaluate_prior
    from aes_lib.evaluate.run import build_bench
    from aes_lib.evaluate.tables import load_predictions
    from aes_lib.train import TrainConfig, train
    from aes_lib.train.alignment import write_alignment_data

    data, work = Path(args.data).resolve(), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    times = {}
    base_dir = work / "small_base"   # built by stage 1 (model="small"), tokens standardised on train images
    align = write_alignment_data(data, work / "align", seed=args.seed)
    s1, s2 = work / "stage1", work / "stage2"
    t = time.perf_counter()
    if not (args.reuse and (s1 / "merged" / "config.json").exists()):
        s1_cfg = stage_config("small", align["train"], align["val"], data / "data", s1, args.stage1_steps,
                              args, "both", [])
        s1_cfg["lr"] = args.stage1_lr if args.stage1_lr is not None else args.lr
        train(TrainConfig.from_dict(s1_cfg))
    times["stage1"] = time.perf_counter() - t
    t = time.perf_counter()
    if not (args.reuse and (s2 / "merged" / "config.json").exists()):
        train(TrainConfig.from_dict(stage_config(str(s1 / "merged"), data / "instructions" / "llava_train.json",
                                                 data / "instructions" / "llava_val.json", data / "data", s2,
                                                 args.stage2_steps, args, args.mcq_form, args.stage2_types)))
    times["stage2"] = time.perf_counter() - t

    # a val benchmark in a folder of its own (never the test split)
    ev = work / "val_eval"
    ev.mkdir(exist_ok=True)
    for sub in ("data", "critiques"):
        if not (ev / sub).exists():
            os.symlink(data / sub, ev / sub)
    build_bench(ev, seed=args.seed, split="val")
    preds = {}
    t = time.perf_counter()
    for mode in args.modes:
        cfg = EvalConfig.from_dict(out_dir=str(ev), seed=args.seed, mode=mode, dimensions=["AesP", "AesA"], dtype="bf16",
                                   n_boot=args.n_boot, progress=True)
        shuffled = EvalConfig.from_dict({**cfg.to_dict(), "shuffle_images": True})
        for name, path in (("base", s1 / "merged"), ("finetuned", s2 / "merged")):
            for c, suffix in ((cfg, ""), (shuffled, ":shuffled-images")):
                if name == "base" and suffix and args.no_base_shuffled:
                    continue
                run = f"{name}-{mode}{suffix}"
                evaluate_model(c, run, model_path=path)
                preds[run] = load_predictions(ev, run)
    times["eval"] = time.perf_counter() - t
    evaluate_prior(EvalConfig.from_dict(out_dir=str(ev), seed=args.seed, dimensions=["AesP", "AesA"]), "blind-prior")
    preds["blind-prior"] = load_predictions(ev, "blind-prior")

    report = {"args": vars(args), "seconds": {k: round(v, 1) for k, v in times.items()}, "comparisons": {}}
    for mode in args.modes:
        ft = f"finetuned-{mode}"
        against = [f"base-{mode}", f"{ft}:shuffled-images", "blind-prior"]
        against += [] if args.no_base_shuffled else [f"base-{mode}:shuffled-images"]
        rows = degradation_differences(preds, ft, against,
                                       seed=args.seed, n_boot=args.n_boot)
        report["comparisons"][mode] = rows
        aesa = {n: [p["correct"] for p in preds[n] if p["dimension"] == "AesA"]
                for n in (ft, f"base-{mode}", f"{ft}:shuffled-images", "blind-prior")}
        report.setdefault("aesa", {})[mode] = {n: round(sum(v) / len(v), 4) for n, v in aesa.items() if v}
        by_form = {}
        for n in (ft, f"base-{mode}", "blind-prior"):
            from aes_lib.evaluate.controls import is_degradation_item
            for p in preds[n]:
                if is_degradation_item(p):
                    by_form.setdefault(n, {}).setdefault(p["qtype"], []).append(p["correct"])
        report.setdefault("by_form", {})[mode] = {n: {q: round(sum(v) / len(v), 3) for q, v in d.items()}
                                                  for n, d in by_form.items()}
    print(json.dumps(report, indent=1))
    (work / "report.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

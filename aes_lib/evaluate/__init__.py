"""Evaluation stage: AesBench-style scoring of any model, local or behind an API (notebook 04).

Modules: :mod:`.bench` (the project's benchmark, AesBench's layout, score datasets),
:mod:`.extract` (option extractor), :mod:`.likelihood` (shared-prefix option-likelihood
scorer), :mod:`.answer` (local / API answering, grade-word scores), :mod:`.judge` (AesI judges),
:mod:`.stats` (bootstrap CIs, paired bootstrap, SRCC, PLCC), :mod:`.score` (result rows),
:mod:`.controls` (blind answer prior, shuffled images), :mod:`.run` (the run).

CLI::

    aes evaluate build-bench [--out-dir outputs]
    aes evaluate run --model PATH [--adapter PATH] | --api MODEL  [--bench FILE] [--name NAME]
    aes evaluate score --format aesbench --responses FILE|DIR [FILE ...] --key FILE [--bench FILE]
"""

from __future__ import annotations

import argparse
import json
import logging

from aes_lib.evaluate.bench import (build_benchmark, load_aesbench, load_aesbench_key,
                                    load_score_dataset, mcq_prompt, read_benchmark,
                                    write_official_responses)
from aes_lib.evaluate.controls import evaluate_controls, evaluate_prior, paired_differences
from aes_lib.evaluate.extract import extract_option
from aes_lib.evaluate.run import EvalConfig, build_bench, evaluate_model, score_aesbench
from aes_lib.evaluate.stats import bootstrap_ci, paired_bootstrap, plcc, srcc

log = logging.getLogger(__name__)

__all__ = ["EvalConfig", "bootstrap_ci", "build_bench", "build_benchmark", "evaluate_controls",
           "evaluate_model", "evaluate_prior", "extract_option", "paired_bootstrap", "paired_differences", "load_aesbench", "load_aesbench_key", "load_score_dataset",
           "mcq_prompt", "plcc", "read_benchmark", "register_cli", "score_aesbench", "srcc",
           "write_official_responses"]


def _cmd_build(args: argparse.Namespace) -> int:
    path = build_bench(args.out_dir, seed=args.seed, source_field=args.source_field,
                       shuffle_scales=not args.keep_scale_order)
    items = read_benchmark(path)
    print(f"{path}: {len(items)} items")
    return 0


def _print_rows(rows) -> None:
    for r in rows:
        if r["group_by"] == "all":
            print(f"{r['model']}\t{r['dimension']}\t{r['metric']}\t{r['value']:.4f}\t"
                  f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]\tn={r['n']}")


def _cmd_run(args: argparse.Namespace) -> int:
    if bool(args.model) == bool(args.api):
        raise ValueError("give exactly one of --model PATH or --api MODEL")
    overrides = {k: v for k, v in {
        "out_dir": args.out_dir, "bench": args.bench, "image_root": args.images, "key": args.key,
        "method": args.method, "mode": args.mode, "reduce": args.reduce, "judge": args.judge,
        "judge_model": args.judge_model, "base_url": args.base_url,
        "api_key_env": args.api_key_env, "limit": args.limit,
        "device": args.device, "dtype": args.dtype, "seed": args.seed}.items() if v is not None}
    cfg = EvalConfig.from_yaml(args.config, **overrides) if args.config else EvalConfig.from_dict(overrides)
    name = args.name or (f"api-{args.api}" if args.api else
                         (args.adapter and f"{args.model}+adapter" or args.model).strip("/").split("/")[-1])
    summary = evaluate_model(cfg, name, model_path=args.model or None, adapter=args.adapter,
                             api_model=args.api or None)
    _print_rows(summary["rows"])
    if summary.get("unparsed"):
        print(f"{len(summary['unparsed'])} answers named no option (counted wrong); "
              f"see {cfg.eval_dir}/results_*.json")
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    if args.format != "aesbench":
        raise ValueError(f"--format {args.format!r}: only aesbench is supported")
    summary = score_aesbench(args.responses, args.key, bench=args.bench, name=args.name or "",
                             out_dir=args.out, seed=args.seed)
    _print_rows(summary["rows"])
    if summary["unparsed"]:
        print(json.dumps({"unparsed": summary["unparsed"]}, indent=1))
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="AesBench-style evaluation (notebook 04)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="evaluate_command", metavar="ACTION", required=True)

    b = sub.add_parser("build-bench", help="write <out-dir>/eval/benchmark.jsonl from the test split")
    b.add_argument("--out-dir", default="outputs")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--source-field", default="auto",
                   help="image field for the 'source' breakdown: auto, source_package, category")
    b.add_argument("--keep-scale-order", action="store_true",
                   help="keep Yes/No, good/fair/poor, high/medium/low in order (default: shuffled)")
    b.set_defaults(func=_cmd_build)

    r = sub.add_parser("run", help="answer a benchmark with one model and score it")
    r.add_argument("--model", help="saved LLaVA-family model folder, or 'tiny' (the embedded tiny LLaVA)")
    r.add_argument("--adapter", help="peft adapter folder applied on --model")
    r.add_argument("--api", help="OpenAI-compatible vision model name (with --base-url)")
    r.add_argument("--name", help="model name in the results (default: folder name)")
    r.add_argument("--bench", help="benchmark.jsonl, AesBench-layout JSON or [{image, gt_score}]")
    r.add_argument("--images", help="image folder of the benchmark")
    r.add_argument("--key", help="AesBench-layout key file (correct answers)")
    r.add_argument("--out-dir")
    r.add_argument("--config", help="YAML of EvalConfig keys")
    r.add_argument("--method", choices=("likelihood", "generate"))
    r.add_argument("--mode", choices=("first-token", "full", "cloze"))
    r.add_argument("--reduce", choices=("sum", "mean"))
    r.add_argument("--judge", choices=("proxy-overlap", "api"))
    r.add_argument("--judge-model")
    r.add_argument("--base-url", help="OpenAI-compatible endpoint of --api and the api judge")
    r.add_argument("--api-key-env", help="NAME of the environment variable with the API key "
                                         "(default OPENAI_API_KEY)")
    r.add_argument("--limit", type=int)
    r.add_argument("--device")
    r.add_argument("--dtype")
    r.add_argument("--seed", type=int)
    r.set_defaults(func=_cmd_run)

    s = sub.add_parser("score", help="score a responses file against a key file")
    s.add_argument("--format", default="aesbench", choices=("aesbench",))
    s.add_argument("--responses", required=True, nargs="+",
                   help="responses file(s), or the folder of AesBench's official test_Aes{P,E,A1,I}.json")
    s.add_argument("--key", required=True)
    s.add_argument("--bench", help="the AesBench annotation file (options); optional")
    s.add_argument("--name")
    s.add_argument("--out", help="folder for results_<name>.json and results.csv")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_cmd_score)

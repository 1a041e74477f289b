"""Stage 1, critique collection: the progressive-question protocol, a SQLite critique store, an
ipywidgets annotation tool and its class server, simulated annotators, importers of real critique data, and the
aggregate statistics (consensus, distributions, Krippendorff's alpha).

CLI: ``aes collect simulate|import|export|stats|serve``. See docs/collect.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from .classroom import class_overview
from .importers import FORMATS, ImportOptions, ImportResult, import_file, score_to_grade, score_to_rating
from .pipeline import (collect_outputs, critiques_dir, export_jsonl, import_into_store, load_manifest,
                       open_store, simulate_into_store, store_summary, write_stats)
from .protocol import STEPS, Protocol, load_protocol, protocol_from_dict
from .simulate import SimulateConfig, simulate_critique, simulate_critiques
from .stats import compute_stats, consensus_rows, ordinal_alpha, plot_stats, words_table
from .store import CritiqueStore

__all__ = [
    "FORMATS", "ImportOptions", "ImportResult", "import_file", "score_to_grade", "score_to_rating",
    "collect_outputs", "critiques_dir", "export_jsonl", "import_into_store", "load_manifest",
    "open_store", "simulate_into_store", "store_summary", "write_stats", "STEPS", "Protocol", "load_protocol",
    "protocol_from_dict", "SimulateConfig", "simulate_critique", "simulate_critiques",
    "compute_stats", "consensus_rows", "ordinal_alpha", "plot_stats", "words_table", "CritiqueStore",
    "AnnotationTool", "class_overview", "register_cli",
]

log = logging.getLogger(__name__)


def __getattr__(name: str):
    if name == "AnnotationTool":  # ipywidgets is imported only when the tool is used
        from .widget import AnnotationTool

        return AnnotationTool
    raise AttributeError(f"module 'aes_lib.collect' has no attribute {name!r}")


# --- CLI ------------------------------------------------------------------------------------

def _cmd_simulate(args: argparse.Namespace) -> int:
    images = load_manifest(args.data)
    cfg = SimulateConfig.from_dict(n_annotators=args.annotators, annotators_per_image=args.per_image,
                                   seed=args.seed, max_images=args.max_images)
    protocol = load_protocol(args.protocol)
    n = simulate_into_store(args.out, images, cfg, protocol)
    path, critiques = export_jsonl(args.out)
    write_stats(args.out, critiques)
    log.info(f"simulated {n} critiques (annotator_kind=simulated) -> {critiques_dir(args.out)}")
    return 0


def _parse_columns(pairs: list[str]) -> dict[str, str]:
    columns = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"--map {pair!r}: expected FIELD=COLUMN")
        key, col = pair.split("=", 1)
        columns[key.strip()] = col.strip()
    return columns


def _cmd_import(args: argparse.Namespace) -> int:
    protocol = load_protocol(args.protocol)
    opt = ImportOptions(source=args.source or "", images_dir=args.images,
                        protocol_version=f"{protocol.id}+import:{args.format}",
                        score_min=args.score_min, score_max=args.score_max,
                        require_text=args.format != "scores" and not args.allow_empty_text,
                        columns=_parse_columns(args.map))
    result = import_into_store(args.out, args.file, args.format, opt)   # refreshes critiques.jsonl
    summary = result.summary()
    counts = result.store_counts
    log.info(f"imported {summary['imported']}, skipped {summary['skipped']} from {args.file} "
             f"(store: {counts['added']} new, {counts['replaced']} replaced, {counts['unchanged']} unchanged)")
    for reason, n in summary["skipped_by_reason"].items():
        log.info(f"  skipped {n}: {reason}")
    if summary["skipped_by_reason"].get("duplicate"):
        log.info(f"  duplicates: {summary['duplicate_rule']}")
    rejects = critiques_dir(args.out) / "rejects.jsonl"
    log.info(f"rejected rows with reasons: {rejects}")
    if summary["skipped"] and not summary["imported"]:
        top = max(summary["skipped_by_reason"].items(), key=lambda kv: kv[1])[0]
        raise ValueError(f"{args.file}: no row could be imported: {summary['skipped']} rejected "
                         f"(most often: {top}); see {rejects}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    path, critiques = export_jsonl(args.out, args.file)
    log.info(f"exported {len(critiques)} critiques -> {path}")
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    stats = write_stats(args.out)
    short = {k: stats[k] for k in ("n_images", "n_critiques", "n_annotators", "annotator_kind",
                                   "grade_counts", "agreement")}
    json.dump(short, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from .serve import serve

    serve(args.data, args.out, host=args.host, port=args.port, per_image=args.per_image,
          join_code=args.join_code, teacher_code=args.teacher_code, protocol=args.protocol,
          lease_seconds=args.lease_seconds, flag_limit=args.flag_limit)
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("collect", help="critique collection: simulate, import, export, stats",
                              description="Critique collection (stage 1). Outputs go to OUT/critiques/.")
    sub = p.add_subparsers(dest="collect_command", metavar="ACTION", required=True)

    def common(sp):
        sp.add_argument("--out", default="outputs", help="output folder (default: outputs)")
        return sp

    s = common(sub.add_parser("simulate", help="simulated critiques from the dataset's ground truth"))
    s.add_argument("--data", default="outputs/data", help="folder holding manifest.json")
    s.add_argument("--annotators", type=int, default=5, help="simulated annotator pool size")
    s.add_argument("--per-image", type=int, default=3, help="simulated critiques per image")
    s.add_argument("--max-images", type=int, default=0, help="only the first N images (0 = all)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--protocol", default="default", help="protocol name or YAML path")
    s.set_defaults(func=_cmd_simulate)

    i = common(sub.add_parser("import", help="import real critiques (PCCD, CSV, JSONL, score files)"))
    i.add_argument("file", help="the file to import")
    i.add_argument("--format", required=True, choices=FORMATS)
    i.add_argument("--images", default=None, help="image folder: image paths must lie inside it")
    i.add_argument("--source", default=None, help="name recorded on every critique (default: format:file)")
    i.add_argument("--score-min", type=float, default=1.0, help="lowest score of the file's scale")
    i.add_argument("--score-max", type=float, default=10.0, help="highest score of the file's scale")
    i.add_argument("--map", action="append", metavar="FIELD=COLUMN",
                   help="csv/jsonl column mapping, e.g. --map description=comment (repeatable)")
    i.add_argument("--allow-empty-text", action="store_true", help="csv/jsonl: accept rows without a description")
    i.add_argument("--protocol", default="default", help="protocol name or YAML path")
    i.set_defaults(func=_cmd_import)

    e = common(sub.add_parser("export", help="write critiques.jsonl from the SQLite store"))
    e.add_argument("--file", default=None, help="destination (default: OUT/critiques/critiques.jsonl)")
    e.set_defaults(func=_cmd_export)

    t = common(sub.add_parser("stats", help="write consensus.csv and stats.json"))
    t.set_defaults(func=_cmd_stats)

    v = common(sub.add_parser(
        "serve", help="serve the annotation tool to a class: many browsers, one store",
        description="Serve the annotation tool to many annotators at once (the same protocol, steps and "
                    "checks as notebook 01's tool), all writing to OUT/critiques/critiques.db. Prints the "
                    "address students open, the join code (when one is needed) and the teacher's view."))
    v.add_argument("--data", default="outputs/data", help="folder holding manifest.json (images are served "
                   "only from it)")
    v.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this computer "
                   "only; 0.0.0.0 for a classroom network, which requires a join code)")
    v.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    v.add_argument("--per-image", type=int, default=3, help="critiques each image gets, from different "
                   "annotators (default 3)")
    v.add_argument("--join-code", default=None, help="the code students need (default: a random one, kept "
                   "in the store, when --host is not a loopback address; none on 127.0.0.1 unless given)")
    v.add_argument("--teacher-code", default=None, help="the code of the teacher's view (default: a random "
                   "one, kept in the store)")
    v.add_argument("--lease-seconds", type=float, default=300.0, help="an image handed out and not heard "
                   "of for this long (a closed tab) passes on to others (default 300)")
    v.add_argument("--flag-limit", type=int, default=2, help="an image flagged by this many annotators is "
                   "withdrawn (default 2)")
    v.add_argument("--protocol", default="default", help="protocol name or YAML path")
    v.set_defaults(func=_cmd_serve)

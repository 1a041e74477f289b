"""Instruction generation (paper step 2): refine critiques, assemble multi-typed instructions.

``aes generate --backend offline|openai``, ``aes generate batch-export`` and
``aes generate batch-import``; see docs/generate.md. The logic lives in
:mod:`aes_lib.generate.core` (pipeline, checks, exports), :mod:`aes_lib.generate.offline`
(templates) and :mod:`aes_lib.generate.llm` (prompts and reply validation).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from aes_lib.generate.core import (BACKENDS, OPEN_TYPES, GenerateConfig, batch_export, batch_import,
                                   check_draft, describe_estimate, describe_usage, estimate, examples,
                                   generate, read_instructions, read_rejects, to_llava, to_messages)

__all__ = ["GenerateConfig", "generate", "estimate", "describe_estimate", "describe_usage", "batch_export", "batch_import", "check_draft",
           "examples", "read_instructions", "read_rejects", "to_llava", "to_messages", "register_cli",
           "BACKENDS", "OPEN_TYPES"]

log = logging.getLogger(__name__)

#: exit code of ``aes generate`` when the run finished and wrote its files but lost critiques
#: (their refine or assemble request failed after every retry); docs/generate.md
EXIT_CRITIQUES_LOST = 3


def _configs(args: argparse.Namespace) -> tuple[GenerateConfig, Any]:
    from aes_lib.client import ClientConfig

    gen: dict[str, Any] = {}
    client: dict[str, Any] = {}
    if args.config:
        from aes_lib.io import load_yaml

        path = Path(args.config)
        if not path.exists():
            raise FileNotFoundError(f"{path}: config file not found")
        data = load_yaml(path) or {}   # aes_lib.io: not UTF-8, alias bombs, duplicate keys name the file
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping with optional 'generate' and 'client' sections")
        unknown = sorted(set(data) - {"generate", "client"})
        if unknown:
            raise ValueError(f"{path}: unknown section {unknown[0]!r} (expected generate, client)")
        gen.update(data.get("generate") or {})
        client.update(data.get("client") or {})
    for key in ("backend", "max_critiques", "unlisted_images", "prompt_version", "seed"):
        if getattr(args, key, None) is not None:
            gen[key] = getattr(args, key)
    if args.no_image:
        gen["send_image"] = False
    for key in ("base_url", "model", "api_key_env", "concurrency", "requests_per_minute",
                "tokens_per_minute", "cache_path"):
        if getattr(args, key, None) is not None:
            client[key] = getattr(args, key)
    return GenerateConfig.from_dict(gen), ClientConfig.from_dict(client)


def _inputs(args: argparse.Namespace) -> dict[str, Any]:
    manifest: Any = "default"
    if args.manifest == "none":
        manifest = None
    elif args.manifest:
        manifest = args.manifest
    return {"manifest": manifest, "critiques_path": args.critiques, "data_dir": args.data_dir}


def _cmd_generate(args: argparse.Namespace) -> int:
    cfg, client_cfg = _configs(args)
    if args.dry_run:
        if cfg.backend != "openai":
            raise ValueError("--dry-run estimates the openai backend: add --backend openai")
        print(json.dumps(estimate(cfg, args.out, client_cfg, **_inputs(args)), indent=2))
        return 0
    result = generate(cfg, args.out, client_cfg, progress=not args.no_progress, **_inputs(args))
    s = result["stats"]
    print(f"{s['n_instructions']} instructions from {s['n_critiques']} critiques, "
          f"{s['n_rejected']} rejected; by type {s['counts_by_type']}; by split {s['counts_by_split']}; "
          f"{describe_usage(result['run']['usage'])} -> {Path(args.out) / 'instructions'}")
    wrong = s["contradicted"]
    print(f"questions contradicting the critique's ratings: {wrong['kept']} kept (goal 0), "
          f"{wrong['drafted']} drafted and rejected")
    if result["lost"]:
        print(f"aes generate: {len(result['lost'])} of {s['n_critiques']} critiques lost: their API requests "
              f"failed (stage refine/assemble in {Path(args.out) / 'instructions' / 'rejects.jsonl'}); "
              f"rerun the same command to retry only those (exit code {EXIT_CRITIQUES_LOST})",
              file=sys.stderr)
        return EXIT_CRITIQUES_LOST
    return 0


def _cmd_batch_export(args: argparse.Namespace) -> int:
    cfg, client_cfg = _configs(args)
    cfg = GenerateConfig.from_dict({**cfg.to_dict(), "backend": "openai"})
    max_bytes = None if args.max_file_mb is None else int(args.max_file_mb * 1_000_000)
    r = batch_export(cfg, args.file, args.out, client_cfg, max_requests=args.max_requests_per_file,
                     max_bytes=max_bytes, **_inputs(args))
    where = r["path"] if len(r["files"]) == 1 else \
        f"{len(r['files'])} files: " + ", ".join(f["path"] for f in r["files"])
    print(f"{r['step']}: wrote {r['requests']} requests to {where}")
    return 0


def _cmd_batch_import(args: argparse.Namespace) -> int:
    cfg, client_cfg = _configs(args)
    cfg = GenerateConfig.from_dict({**cfg.to_dict(), "backend": "openai"})
    r = batch_import(cfg, args.file, args.out, client_cfg, **_inputs(args))
    print(f"imported {r['imported']}, invalid {r['invalid']}, failed {r['failed']}, "
          f"unknown {r['unknown']} (from {r['files']} file(s))")
    for key, err in list(r["errors"].items())[:20]:
        print(f"  {key}: {err}")
    return 0 if r["imported"] or not (r["invalid"] or r["failed"] or r["unknown"]) else 1


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="outputs", help="output folder (reads data/, critiques/; "
                                                     "writes instructions/)")
    p.add_argument("--config", help="YAML with optional 'generate' and 'client' sections")
    p.add_argument("--critiques", help="critiques JSONL (default <out>/critiques/critiques.jsonl)")
    p.add_argument("--manifest", help="manifest JSON (default <out>/data/manifest.json; 'none' = "
                                      "no manifest)")
    p.add_argument("--data-dir", help="folder image paths are relative to (default: the manifest's)")
    p.add_argument("--backend", choices=BACKENDS)
    p.add_argument("--max-critiques", type=int)
    p.add_argument("--unlisted-images", choices=("error", "hash_split"))
    p.add_argument("--prompt-version")
    p.add_argument("--seed", type=int)
    p.add_argument("--no-image", action="store_true", help="openai: do not attach images")
    p.add_argument("--base-url", help="OpenAI-compatible endpoint (vLLM, Ollama, ...)")
    p.add_argument("--model")
    p.add_argument("--api-key-env", help="NAME of the environment variable with the key")
    p.add_argument("--concurrency", type=int)
    p.add_argument("--requests-per-minute", type=int)
    p.add_argument("--tokens-per-minute", type=int)
    p.add_argument("--cache-path", help="SQLite reply cache (default <out>/instructions/llm_cache.sqlite)")


def register_cli(subparsers: Any) -> None:
    p = subparsers.add_parser("generate", help="instruction generation (notebook 02)",
                              description="Refine critiques and assemble multi-typed instructions.")
    _common(p)
    p.add_argument("--dry-run", action="store_true", help="openai: estimate requests, tokens, cost")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_generate)
    sub = p.add_subparsers(dest="generate_command", metavar="{batch-export,batch-import}")
    e = sub.add_parser("batch-export", help="write the next step's requests for the OpenAI Batch API")
    _common(e)
    e.add_argument("--file", required=True, help="requests JSONL to write (split into "
                                                  "<stem>.part001.jsonl, ... when over a limit)")
    e.add_argument("--max-requests-per-file", type=int,
                   help="requests per file (default 50000, the Batch API's limit)")
    e.add_argument("--max-file-mb", type=float,
                   help="megabytes (10^6 bytes) per file (default 200, the Batch API's limit)")
    e.set_defaults(func=_cmd_batch_export)
    i = sub.add_parser("batch-import", help="import a Batch API results file into the reply cache")
    _common(i)
    i.add_argument("--file", required=True, nargs="+", help="the Batch API output JSONL file(s)")
    i.set_defaults(func=_cmd_batch_import)

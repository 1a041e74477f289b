"""The ``aes`` command: the non-notebook face of every stage.

Each stage module defines ``register_cli(subparsers)`` adding its own subcommand; this file only
wires them together, so ``aes --help`` lists exactly the stages that exist.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

#: stage modules, in pipeline order; each provides ``register_cli(subparsers)``.
STAGE_MODULES = ("runner", "data", "collect", "generate", "train", "evaluate", "report")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aes", description="AesExpert Companion: every stage of the pipeline from the shell.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in STAGE_MODULES:
        try:
            module = importlib.import_module(f"aes_lib.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"aes_lib.{name}":
                continue  # stage not built yet
            raise
        if hasattr(module, "register_cli"):
            module.register_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError) as e:  # user errors: one clear line, no trace
        if args.verbose:
            raise
        print(f"aes {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

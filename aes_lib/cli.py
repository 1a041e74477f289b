"""The ``aes`` command: the non-notebook face of every stage.

Each stage module defines ``register_cli(subparsers)`` adding its own subcommand; this file only
wires them together, so ``aes --help`` lists exactly the stages that exist.

Exit codes: 0 done; 2 a user error (bad input, a missing file, an unwritable output folder, any
``OSError``), shown as one line naming the file; other codes are documented by the subcommand
(``aes generate``: 3 when critiques were lost to API failures).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sqlite3
import sys

from aes_lib import redaction

#: stage modules, in pipeline order; each provides ``register_cli(subparsers)``.
STAGE_MODULES = ("runner", "data", "collect", "generate", "train", "evaluate", "report")


class Parser(argparse.ArgumentParser):
    """argparse, except that an unknown option is reported as one. Where a parser has
    subcommands, argparse takes the unknown option's value for a subcommand and answers
    "invalid choice: 'VALUE'"; this names the option instead."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        self._given = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str):  # type: ignore[override]
        m = re.search(r"invalid choice: '(.*?)'", message)
        given = getattr(self, "_given", [])
        if m and m.group(1) in given:
            at = given.index(m.group(1))
            unknown = [a for a in given[:at] if self._unknown_option(a)]
            if unknown:
                message = f"unrecognized arguments: {' '.join(unknown + [given[at]])}"
        super().error(message)

    def _unknown_option(self, arg: str) -> bool:
        if not arg.startswith("-") or arg in ("-", "--") or self._negative_number_matcher.match(arg):
            return False
        name = arg.split("=", 1)[0]
        known = self._option_string_actions
        return name not in known and not (name.startswith("--") and any(o.startswith(name) for o in known))


def error_line(e: BaseException, args: argparse.Namespace) -> str:
    """One line for a user error: the message (which names the file), never a traceback."""
    text = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, sqlite3.Error):   # SQLite names no file ("unable to open database file")
        where = getattr(args, "out", None)
        text = f"SQLite: {text}" + (f" (a database under {where}: is the folder writable?)" if where else "")
    elif isinstance(e, UnicodeDecodeError):
        text += " (an input file is not UTF-8 text; rerun with -v to see which)"
    elif isinstance(e, OSError) and e.filename and str(e.filename) not in text:
        text += f": {e.filename}"
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
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
    redaction.install_log_redaction()   # an API key never reaches the console
    try:
        return int(args.func(args) or 0)
    except (OSError, ValueError, sqlite3.Error) as e:  # user errors: one clear line, no trace
        if args.verbose:
            raise
        print(f"aes {args.command}: error: {redaction.redact(error_line(e, args))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

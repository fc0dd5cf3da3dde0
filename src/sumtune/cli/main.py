"""Entry point of the `sumtune` command.

Each subcommand lives in its own module of this package and defines `add_parser(subparsers)`,
which registers the subcommand and sets `handler` to a function taking the parsed arguments.
Heavy imports (torch, transformers) happen inside the handlers so that `--help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from sumtune import __version__
from sumtune.errors import SumtuneError

SUBCOMMAND_MODULES = (
    "init_model",
    "summarize",
    "train",
    "evaluate",
    "score",
    "baseline",
    "compare",
    "tune",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sumtune",
        description="Fine-tune T5 summarizers with prefix tuning, prompt tuning, adapters, LoRA "
        "or full fine-tuning, then evaluate them with ROUGE and summarize new text.",
    )
    parser.add_argument("--version", action="version", version=f"sumtune {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(f"sumtune.cli.{name}")
        except ModuleNotFoundError as error:
            if error.name == f"sumtune.cli.{name}":
                continue  # subcommand not built yet
            raise
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = args.handler(args)
    except SumtuneError as error:
        print(f"sumtune {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sumtune {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())

"""`sumtune train`: fine-tune a T5 summarizer with one method.

One option per `TrainConfig` field, built from the field's help text and example, plus one option
per field of each method's config class (`--lora-r`, `--prefix-length`, ...). The method options
need `sumtune.methods`, which imports torch. They are therefore added only when the `train`
subcommand itself is parsed or its help is printed, so that `sumtune --help` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import typing
from dataclasses import MISSING, fields
from typing import Any

from sumtune.errors import ConfigError

DESCRIPTION = """\
Fine-tune a T5 summarizer with prefix tuning, prompt tuning, adapters, LoRA or full fine-tuning.

Settings come in layers, later ones winning: --preset NAME, then --config FILE.yaml (keys are the
option names with underscores, method options under method_options:), then the flags below.
Every value is checked before training starts, and all invalid values are reported together.

The run folder (--output-dir) receives config.yaml, adapter/ (the best checkpoint by validation
ROUGE), checkpoints/step-N/, metrics.jsonl, metrics.json, predictions.jsonl and tensorboard/.
Data-parallel training: accelerate launch --multi_gpu --num_processes N -m sumtune train ...
(on a machine without GPUs as well, where sumtune then forms a CPU process group).
"""

EPILOG = """\
example:
  sumtune train --method lora --model t5-small --data cnn_dailymail --output-dir runs/lora \\
      --max-train-samples 2000 --max-steps 500 --lora-r 8
  sumtune train --preset t5-small-prefix --data articles.jsonl --output-dir runs/prefix --max-steps 200
  sumtune train --config my-run.yaml --learning-rate 1e-3
  sumtune train --resume --output-dir runs/lora
"""

METHOD_DEST_PREFIX = "method_option__"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from sumtune.train.config import preset_names

    parser = subparsers.add_parser(
        "train", help="fine-tune a T5 summarizer with one method", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.__class__ = LazyMethodOptionsParser
    parser.add_argument("--preset", metavar="NAME",
                        help="start from a bundled preset: " + ", ".join(preset_names()) + " (example: t5-small-lora)")
    parser.add_argument("--config", metavar="FILE.yaml",
                        help="YAML file of settings, applied over the preset (example: my-run.yaml)")
    add_config_options(parser)
    parser.set_defaults(handler=run)


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """Add one option per TrainConfig field; unset options stay out of the namespace."""
    from sumtune.train.config import cli_fields, field_types, flag_name

    hints = field_types()
    group = parser.add_argument_group("training options")
    for item in cli_fields():
        help_text = describe(item.metadata["help"], item.default, item.metadata.get("example"))
        if hints[item.name] is bool:
            group.add_argument(flag_name(item.name), dest=item.name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=help_text)
        else:
            # Values stay strings here: TrainConfig converts and checks them all at once, so every
            # invalid value is reported together instead of argparse stopping at the first.
            group.add_argument(flag_name(item.name), dest=item.name, default=argparse.SUPPRESS,
                               metavar=option_metavar(item.metadata, hints[item.name]), help=help_text)


def option_metavar(metadata: dict[str, Any], hint: Any) -> str:
    """Return the placeholder shown after an option: its choices, or N, X or TEXT by type."""
    from sumtune.train.config import base_type

    if metadata.get("metavar"):
        return metadata["metavar"]
    if metadata.get("choices"):
        return "{" + ",".join(metadata["choices"]) + "}"
    target, _ = base_type(hint)
    return {int: "N", float: "X"}.get(target, "TEXT")


def describe(help_text: str, default: Any, example: Any) -> str:
    """Return an option's help: what it sets, its default and an example value."""
    parts = [help_text]
    if isinstance(default, tuple | list):
        parts.append(f"(default: {' '.join(map(str, default))})")
    elif default is not MISSING and default is not None and not isinstance(default, bool):
        parts.append(f"(default: {default!r})" if isinstance(default, str) else f"(default: {default})")
    if example is not None:
        parts.append(f"(example: {example})")
    # argparse treats % as a format character in help text.
    return " ".join(parts).replace("%", "%%")


def method_flag(method: str, name: str) -> str:
    """Return the flag of a method option: --lora-r, and --prefix-length for prefix's prefix_length."""
    if name.startswith(method + "_"):
        return "--" + name.replace("_", "-")
    return f"--{method}-" + name.replace("_", "-")


class LazyMethodOptionsParser(argparse.ArgumentParser):
    """The `train` parser: adds the method options the first time it parses or prints help."""

    _method_options_added = False

    def _add_method_options(self) -> None:
        if self._method_options_added:
            return
        self._method_options_added = True
        from sumtune.methods import METHODS

        for method, spec in METHODS.items():
            config_fields = fields(spec.config_class)
            if not config_fields:
                continue
            group = self.add_argument_group(f"{method} options (with --method {method})")
            hints = typing.get_type_hints(spec.config_class)
            for item in config_fields:
                add_method_option(group, method, item, hints[item.name])

    def parse_known_args(self, args=None, namespace=None):
        self._add_method_options()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._add_method_options()
        return super().format_help()


def add_method_option(group, method: str, item, hint: Any) -> None:
    from sumtune.train.config import base_type

    target, _ = base_type(hint)
    dest = f"{METHOD_DEST_PREFIX}{method}__{item.name}"
    help_text = describe(item.metadata.get("help", ""), item.default, None)
    if target is bool:
        group.add_argument(method_flag(method, item.name), dest=dest, action=argparse.BooleanOptionalAction,
                           default=argparse.SUPPRESS, help=help_text)
    elif typing.get_origin(target) in (tuple, list):
        group.add_argument(method_flag(method, item.name), dest=dest, nargs="+", default=argparse.SUPPRESS,
                           metavar="NAME", help=help_text)
    else:
        group.add_argument(method_flag(method, item.name), dest=dest, default=argparse.SUPPRESS,
                           metavar=option_metavar({}, hint), help=help_text)


def collect_method_options(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Return the method options given on the command line, grouped by method."""
    options_by_method: dict[str, dict[str, Any]] = {}
    for dest, value in vars(args).items():
        if dest.startswith(METHOD_DEST_PREFIX):
            method, name = dest[len(METHOD_DEST_PREFIX):].split("__", 1)
            if isinstance(value, list):
                # Accept both `--lora-targets q v` and `--lora-targets q,v`.
                value = [part for entry in value for part in entry.split(",") if part]
            options_by_method.setdefault(method, {})[name] = value
    return options_by_method


def build_config(args: argparse.Namespace):
    """Resolve preset, config file and flags into a TrainConfig, raising every problem at once."""
    from sumtune.train.config import cli_fields, resolve_config

    overrides = {item.name: getattr(args, item.name) for item in cli_fields() if hasattr(args, item.name)}
    config = resolve_config(preset=args.preset, config_file=args.config, overrides=overrides,
                            resume_from_run=bool(overrides.get("resume")))
    problems = []
    for method, options in collect_method_options(args).items():
        if method == config.method:
            config.method_options = {**config.method_options, **options}
            continue
        flags = ", ".join(method_flag(method, name) for name in options)
        problems.append(f"{flags} belong to --method {method}, but the method is {config.method!r}; "
                        f"remove them or pass --method {method}")
    problems.extend(config.validate())
    if problems:
        raise ConfigError(problems)
    return config


def run(args: argparse.Namespace) -> int:
    from sumtune.train import train

    # Under `accelerate launch`, only the first process logs progress and prints the report.
    main_process = int(os.environ.get("RANK", "0")) == 0
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO if main_process else logging.WARNING,
                            format="sumtune: %(message)s", stream=sys.stderr)
    config = build_config(args)
    result = train(config)
    if result.is_main_process:
        print(result.report)
    return 0

"""`sumtune compare`: train several methods under one budget and compare them on the same examples."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from typing import Any

from sumtune.errors import ConfigError

DESCRIPTION = """\
Train every method in --methods on the same data with the same budget (--budget-steps
optimizer steps or --budget-minutes of training), once per seed, then evaluate every run on
the same examples. Each run goes to DIR/runs/METHOD-seedN/. The output folder receives
results.json (one row per method and seed), report.md (mean and standard deviation across
seeds, and which gaps are within the noise) and three plots: rouge_vs_params.png,
validation_loss.png and time_memory.png.

Running the command again with the same folder keeps the finished runs and trains only the
missing ones, so a stopped comparison continues, and adding a method trains only that method.

Training settings shared by every method come from the options below and --set FIELD=VALUE
(any TrainConfig field). --set METHOD.NAME=VALUE sets a TrainConfig field or a method option
for one method only, such as a higher learning rate for prompt tuning.
"""

EPILOG = """\
example:
  sumtune compare --model t5-small --data cnn_dailymail --methods prefix,prompt,adapter,lora,full \\
      --output-dir runs/compare --budget-steps 2000 --seeds 1,2,3 \\
      --max-train-samples 20000 --max-eval-samples 500 --set prompt.learning_rate=0.3
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="train several methods under one budget and compare ROUGE, size, time and memory",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--methods",
        required=True,
        type=comma_list,
        metavar="LIST",
        help="comma-separated methods to compare, from prefix, prompt, adapter, lora and full",
    )
    add_common_options(parser)
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument(
        "--budget-steps", type=positive_int, metavar="N", help="optimizer steps per run (sets max_steps)"
    )
    budget.add_argument(
        "--budget-minutes",
        type=positive_float,
        metavar="M",
        help="minutes of training per run (sets max_train_minutes); training may end sooner "
        "when its epochs run out",
    )
    parser.add_argument(
        "--seeds",
        type=seed_list,
        default=[42],
        metavar="LIST",
        help="comma-separated seeds; each method trains once per seed (default: 42, as in sumtune train)",
    )
    parser.add_argument(
        "--eval-split",
        default="test",
        help="split every run is evaluated on after training (default: test)",
    )
    parser.add_argument(
        "--bootstrap",
        type=positive_int,
        default=1000,
        metavar="N",
        help="resamples of the paired bootstrap that decides which gaps are noise (default: 1000)",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="train every run in this process instead of a fresh one per run; faster to start, but "
        "on a CPU each run then reports the largest peak memory so far",
    )
    parser.set_defaults(handler=run)


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """Add the options that `compare` and `tune` share: model, data, output folder and training settings."""
    parser.add_argument("--model", required=True, metavar="ID_OR_DIR", help="base T5: a hub id or a local directory")
    parser.add_argument(
        "--data",
        required=True,
        metavar="SOURCE",
        help="cnn_dailymail, a .jsonl/.json/.csv/.parquet file, a directory with one file per split, "
        "or train=FILE,validation=FILE,test=FILE",
    )
    parser.add_argument("--output-dir", required=True, metavar="DIR", help="folder for the runs and the report")
    parser.add_argument("--max-train-samples", type=positive_int, metavar="N", help="train on the first N examples")
    parser.add_argument(
        "--max-eval-samples",
        type=positive_int,
        metavar="N",
        help="validate on the first N validation examples (compare also evaluates on the first N of --eval-split)",
    )
    parser.add_argument("--max-source-length", type=positive_int, metavar="N", help="article length in tokens")
    parser.add_argument("--max-target-length", type=positive_int, metavar="N", help="summary length in tokens")
    parser.add_argument("--eval-steps", type=positive_int, metavar="N", help="validate every N optimizer steps")
    parser.add_argument(
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="[METHOD.]NAME=VALUE",
        help="set a TrainConfig field for every run, or a field or method option for one method "
        "(repeatable), such as --set warmup_steps=100 --set lora.r=16",
    )


# Options of add_common_options that map one to one onto TrainConfig fields.
COMMON_TRAIN_FIELDS = ("max_train_samples", "max_eval_samples", "max_source_length", "max_target_length", "eval_steps")


def comma_list(text: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"invalid list {text!r}, expected comma-separated names")
    return items


def seed_list(text: str) -> list[int]:
    try:
        return [int(item) for item in comma_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seed list {text!r}, expected whole numbers such as 1,2,3") from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}, expected a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {value}, expected 1 or more")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}, expected a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"invalid value {text}, expected a positive number")
    return value


def parse_value(text: str) -> Any:
    """Parse a --set value: int, float, true/false, null, a YAML list such as [q, v], or else the string."""
    stripped = text.strip()
    for convert in (int, float):
        try:
            return convert(stripped)
        except ValueError:
            pass
    if stripped.lower() in ("true", "false"):
        return stripped.lower() == "true"
    if stripped.lower() in ("null", "none"):
        return None
    if stripped.startswith("["):
        import yaml

        try:
            return yaml.safe_load(stripped)
        except yaml.YAMLError as error:
            raise ConfigError([f"--set value {text!r} is not a valid list: {error}"]) from error
    return text


def split_assignments(
    assignments: Iterable[str], methods: Sequence[str]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Sort --set items into (TrainConfig values, per-method TrainConfig values, per-method options).

    A NAME without a method applies to every run and must be a TrainConfig field. METHOD.NAME is
    a TrainConfig field or an option of that method, for that method only. Raises ConfigError
    listing every malformed or unknown item.
    """
    from sumtune.methods import METHODS, method_config_class
    from sumtune.search_space import field_types
    from sumtune.train import TrainConfig

    train_fields = set(field_types(TrainConfig))
    shared: dict[str, Any] = {}
    per_method: dict[str, dict[str, Any]] = {}
    options: dict[str, dict[str, Any]] = {}
    problems = []
    for item in assignments:
        name, separator, text = item.partition("=")
        name = name.strip()
        if not separator or not name:
            problems.append(f"--set {item!r} is not NAME=VALUE; write for example --set warmup_steps=100")
            continue
        value = parse_value(text)
        method, dot, field = name.rpartition(".")
        if not dot:
            if name not in train_fields:
                problems.append(f"--set {name}: unknown TrainConfig field; method options need METHOD.{name}")
            shared[name] = value
            continue
        if method not in METHODS or method not in methods:
            problems.append(f"--set {name}: {method!r} is not one of the methods in use ({', '.join(methods)})")
            continue
        if field in train_fields and field not in ("method", "model", "data", "output_dir"):
            per_method.setdefault(method, {})[field] = value
        elif field in field_types(method_config_class(method)):
            options.setdefault(method, {})[field] = value
        else:
            problems.append(f"--set {name}: {field!r} is neither a TrainConfig field nor a {method} option")
    if problems:
        raise ConfigError(problems)
    return shared, per_method, options


def common_train_options(args: argparse.Namespace) -> dict[str, Any]:
    """Return the TrainConfig values given through the shared options, leaving out unset ones."""
    return {name: getattr(args, name) for name in COMMON_TRAIN_FIELDS if getattr(args, name) is not None}


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sumtune.compare import CompareSettings, run_compare

    shared, per_method, options = split_assignments(args.assignments, args.methods)
    settings = CompareSettings(
        model=args.model,
        data=args.data,
        methods=args.methods,
        output_dir=Path(args.output_dir),
        seeds=args.seeds,
        budget_steps=args.budget_steps,
        budget_minutes=args.budget_minutes,
        train_options={**shared, **common_train_options(args)},
        method_train_options=per_method,
        method_options=options,
        eval_split=args.eval_split,
        max_eval_samples=args.max_eval_samples,
        bootstrap_resamples=args.bootstrap,
        isolate=not args.in_process,
    )
    result = run_compare(settings)
    return 1 if result.failures else 0

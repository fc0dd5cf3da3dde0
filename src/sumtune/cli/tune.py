"""`sumtune tune`: search the hyperparameters of one method with Optuna."""

from __future__ import annotations

import argparse

from sumtune.cli.compare import add_common_options, common_train_options, positive_float, positive_int

OBJECTIVES = ("rouge1", "rouge2", "rougeL", "rougeLsum")

DESCRIPTION = """\
Search the hyperparameters of one method with Optuna's TPE sampler. Each trial trains a run
in DIR/trials/STUDY/trial-NNNN/ and scores it by its best validation ROUGE (--objective).
The validation score at every evaluation goes to a median pruner, which stops trials that
fall behind earlier ones at the same step.

The built-in search space of each method covers the learning rate (log scale), batch size,
max_steps and the method's own size knob (prefix_length, prompt_length, bottleneck_size, or
LoRA's r and alpha). --search-space FILE.yaml changes it; see docs/tuning.md for the format:
  learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}
  batch_size: {choices: [8, 16]}
  method_options:
    r: {low: 4, high: 64, log: true}
A value given with --set or a shared option is fixed and taken out of the search.

The study is stored in sqlite:///DIR/study.db unless --storage names another database, so
running the command again continues the study with --n-trials more trials. Workers on
several machines share one study through a database server and the same --study-name.
At the end the command writes trials.csv, best_config.yaml and the plots
optimization_history.png, intermediate_values.png and param_importances.png, and prints the
best trial with the `sumtune train` command that retrains it.
"""

EPILOG = """\
example:
  sumtune tune --method lora --model t5-small --data cnn_dailymail --n-trials 30 \\
      --output-dir runs/tune-lora --max-train-samples 20000 --max-eval-samples 200 --eval-steps 200
  sumtune tune --method prefix --model t5-small --data cnn_dailymail --n-trials 20 \\
      --output-dir runs/tune-prefix --storage postgresql+psycopg2://tuner:secret@db-host/studies \\
      --study-name prefix-cnndm --search-space prefix-space.yaml
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tune",
        help="search a method's hyperparameters with Optuna",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--method", required=True, help="method to tune: prefix, prompt, adapter, lora or full"
    )
    parser.add_argument(
        "--n-trials", required=True, type=positive_int, metavar="N", help="trials this worker runs"
    )
    add_common_options(parser)
    parser.add_argument(
        "--search-space", metavar="FILE.yaml", help="YAML file that changes the built-in search space"
    )
    add_study_options(parser)
    parser.set_defaults(handler=run)


def add_study_options(parser: argparse.ArgumentParser) -> None:
    """Add the options that choose the study's storage, objective, pruner, sampler and time limit."""
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="SQLAlchemy database URL of the study, such as postgresql+psycopg2://user:password@host/db "
        "(default: sqlite:///DIR/study.db)",
    )
    parser.add_argument(
        "--study-name", metavar="NAME", help="study to create or continue (default: sumtune-METHOD)"
    )
    parser.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="rougeLsum",
        help="validation ROUGE to maximize (default: rougeLsum)",
    )
    parser.add_argument(
        "--pruner",
        choices=("median", "none"),
        default="median",
        help="stop trials whose validation score is below the median of earlier trials at the "
        "same step (median), or never stop early (none) (default: median)",
    )
    parser.add_argument(
        "--pruner-startup-trials",
        type=positive_int,
        default=5,
        metavar="N",
        help="trials that finish before the pruner stops any (default: 5)",
    )
    parser.add_argument(
        "--sampler-seed",
        type=int,
        metavar="N",
        help="seed of the TPE sampler for a repeatable single-worker study (default: random, "
        "so parallel workers draw different configurations)",
    )
    parser.add_argument(
        "--timeout-minutes",
        type=positive_float,
        metavar="M",
        help="start no new trial after M minutes (default: no limit)",
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sumtune.cli.compare import split_assignments
    from sumtune.errors import ConfigError
    from sumtune.methods import METHODS
    from sumtune.tune import TuneSettings, run_tune

    if args.method not in METHODS:
        raise ConfigError([f"unknown method {args.method!r}; choose one of {', '.join(METHODS)}"])
    shared, per_method, options = split_assignments(args.assignments, [args.method])
    settings = TuneSettings(
        method=args.method,
        model=args.model,
        data=args.data,
        output_dir=Path(args.output_dir),
        n_trials=args.n_trials,
        train_options={**shared, **per_method.get(args.method, {}), **common_train_options(args)},
        method_options=options.get(args.method, {}),
        search_space_file=Path(args.search_space) if args.search_space else None,
        storage=args.storage,
        study_name=args.study_name,
        objective=args.objective,
        pruner=args.pruner,
        pruner_startup_trials=args.pruner_startup_trials,
        sampler_seed=args.sampler_seed,
        timeout_s=args.timeout_minutes * 60 if args.timeout_minutes else None,
    )
    outcome = run_tune(settings)
    return 0 if outcome.best_trial is not None else 1

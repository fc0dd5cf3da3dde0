"""Side-by-side comparison of methods: same data, same budget, same evaluation examples.

`run_compare` trains every method once per seed into `DIR/runs/{method}-seed{N}/`, evaluates each
run on the same examples, and keeps one row per run in `DIR/results.json`. A row is written as
soon as its run is evaluated, so a comparison that stops keeps its finished rows and trains only
what is missing when started again. Then `sumtune.compare_report.write_report` writes
`DIR/report.md` and the plots.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sumtune.compare_report import SCORES_FILE, write_report
from sumtune.errors import ConfigError, DataError, SumtuneError
from sumtune.files import write_text_atomically
from sumtune.metrics import ROUGE_TYPES

RESULTS_FILE = "results.json"


class RunFailedError(SumtuneError):
    """A run that failed for a reason of its own method or settings, such as a diverging loss.

    The comparison records it and goes on with the other runs.
    """


@dataclass
class CompareResult:
    """All rows of results.json, and the (method, seed, message) of each run that failed in this call."""

    rows: list[dict[str, Any]]
    failures: list[tuple[str, int, str]]


@dataclass
class CompareSettings:
    """Everything `sumtune compare` needs: the methods, the shared budget and the shared evaluation."""

    model: str
    data: str
    methods: list[str]
    output_dir: Path
    seeds: list[int] = field(default_factory=lambda: [42])
    budget_steps: int | None = None
    budget_minutes: float | None = None
    # TrainConfig values for every method, then per-method TrainConfig values and method options.
    train_options: dict[str, Any] = field(default_factory=dict)
    method_train_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    eval_split: str = "test"
    max_eval_samples: int | None = None
    bootstrap_resamples: int = 1000
    # Train each run in its own process, so that peak memory is measured per run.
    isolate: bool = True

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)

    def run_dir(self, method: str, seed: int) -> Path:
        return self.output_dir / "runs" / f"{method}-seed{seed}"

    def header(self) -> dict[str, Any]:
        """Settings that every row of one results.json shares."""
        return {
            "model": self.model,
            "data": self.data,
            "budget": {"steps": self.budget_steps, "minutes": self.budget_minutes},
            "evaluation": {"split": self.eval_split, "max_samples": self.max_eval_samples},
        }


def build_configs(settings: CompareSettings) -> dict[tuple[str, int], Any]:
    """Build and validate the TrainConfig of every (method, seed), raising one ConfigError for all problems."""
    from sumtune.train import TrainConfig

    problems = _settings_problems(settings)
    if problems:
        raise ConfigError(problems)

    budget: dict[str, Any] = {}
    if settings.budget_steps is not None:
        budget["max_steps"] = settings.budget_steps
    if settings.budget_minutes is not None:
        budget["max_train_minutes"] = settings.budget_minutes

    configs = {}
    for method in settings.methods:
        for seed in settings.seeds:
            values = {
                **settings.train_options,
                **settings.method_train_options.get(method, {}),
                **budget,
                "seed": seed,
            }
            config = TrainConfig(
                method=method,
                model=settings.model,
                data=settings.data,
                output_dir=str(settings.run_dir(method, seed)),
                method_options=dict(settings.method_options.get(method, {})),
                **values,
            )
            for problem in config.validate():
                # Runs that differ only in their seed share their problems, so each is listed once.
                if f"{method}: {problem}" not in problems:
                    problems.append(f"{method}: {problem}")
            configs[(method, seed)] = config
    if problems:
        raise ConfigError(problems)
    return configs


def _settings_problems(settings: CompareSettings) -> list[str]:
    """Return every problem with the methods, seeds, budget and evaluation split."""
    from sumtune.methods import METHODS

    problems: list[str] = []
    unknown = [method for method in settings.methods if method not in METHODS]
    if unknown:
        problems.append(
            f"unknown method(s) {', '.join(map(repr, unknown))} in --methods; choose from {', '.join(METHODS)}"
        )
    if not settings.methods:
        problems.append("no methods to compare; pass --methods with at least one of " + ", ".join(METHODS))
    if len(set(settings.methods)) != len(settings.methods):
        problems.append(f"--methods lists a method twice: {','.join(settings.methods)}")
    if not settings.seeds or len(set(settings.seeds)) != len(settings.seeds):
        problems.append(f"--seeds must list distinct seeds, got {settings.seeds}")
    if settings.budget_steps is not None and settings.budget_steps < 1:
        problems.append(f"--budget-steps is {settings.budget_steps}, expected 1 or more")
    if settings.budget_minutes is not None and not settings.budget_minutes > 0:
        problems.append(f"--budget-minutes is {settings.budget_minutes}, expected a positive number")
    for method in settings.method_train_options.keys() | settings.method_options.keys():
        if method not in settings.methods:
            problems.append(f"settings are given for {method!r}, which is not in --methods; add it or remove them")
    for flag, budget_value, field_name in (
        ("--budget-steps", settings.budget_steps, "max_steps"),
        ("--budget-minutes", settings.budget_minutes, "max_train_minutes"),
    ):
        sources = [settings.train_options, *settings.method_train_options.values()]
        if budget_value is not None and any(field_name in source for source in sources):
            problems.append(
                f"{field_name} is set with --set, but {flag} {budget_value} already sets it for every run; "
                "remove one of them"
            )
    problems.extend(_evaluation_split_problems(settings))
    return problems


def _evaluation_split_problems(settings: CompareSettings) -> list[str]:
    """Check that the evaluation split exists and contains no training rows."""
    from sumtune.data import available_splits, is_single_file, normalize_split

    split = normalize_split(settings.eval_split)
    if is_single_file(settings.data):
        return [
            f"--data {settings.data} is a single file, whose rows serve every split, so evaluating on its "
            f"{split} split would score articles the runs trained on; pass a directory with train, "
            "validation and test files, or a mapping such as train=train.jsonl,test=test.jsonl"
        ]
    splits = available_splits(settings.data)
    if split not in splits:
        return [
            f"--data {settings.data} has no {split} split (splits: {', '.join(splits)}); add one, or choose "
            "another --eval-split"
        ]
    return []


def load_results(settings: CompareSettings) -> list[dict[str, Any]]:
    """Return the rows of an earlier results.json, after checking that it used the same budget and data."""
    path = settings.output_dir / RESULTS_FILE
    if not path.is_file():
        return []
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path} is not valid JSON ({error}); move it away to start the comparison again") from error
    header = settings.header()
    differences = [
        f"{key}: {stored.get(key)!r} in {path}, {value!r} now"
        for key, value in header.items()
        if stored.get(key) != value
    ]
    if differences:
        raise ConfigError(
            [f"{path} was written with other settings, so its rows are not comparable with new ones: {difference}"
             for difference in differences]
            + ["use another --output-dir, or the settings of the earlier comparison"]
        )
    return list(stored.get("rows", []))


# TrainConfig fields that do not change what a run learns, left out when a stored run's config
# is compared with the current one.
NON_RESULT_FIELDS = (
    "output_dir", "progress_bar", "tensorboard", "logging_steps", "save_steps", "save_total_limit",
    "resume", "overwrite_output_dir",
)


def result_config(config: Any) -> dict[str, Any]:
    """Return the TrainConfig values that decide a run's result, as stored in its row."""
    values = config.to_dict()
    return {key: value for key, value in values.items() if key not in NON_RESULT_FIELDS}


def stale_rows(rows: Sequence[Mapping[str, Any]], configs: Mapping[tuple[str, int], Any]) -> list[str]:
    """Describe each finished row whose stored config differs from the config this call would train."""
    problems = []
    for row in rows:
        key = (row["method"], row["seed"])
        if key not in configs or "config" not in row:
            continue
        current = result_config(configs[key])
        changed = sorted(
            name for name in current.keys() | row["config"].keys()
            if current.get(name) != row["config"].get(name)
        )
        if changed:
            details = ", ".join(f"{name} {row['config'].get(name)!r} -> {current.get(name)!r}" for name in changed)
            problems.append(
                f"{row['run_dir']} was trained with other settings ({details}); delete that folder to "
                "train it again with the new settings, or use another --output-dir"
            )
    return problems


def is_finished(row: Mapping[str, Any]) -> bool:
    """Return whether a stored row is complete: its run's metrics.json and evaluation scores exist."""
    run_dir = Path(row.get("run_dir", ""))
    return (run_dir / "metrics.json").is_file() and (run_dir / SCORES_FILE).is_file()


def run_compare(settings: CompareSettings, *, echo: Callable[[str], None] = print) -> CompareResult:
    """Train and evaluate every (method, seed) that has no finished row, then write the report.

    The rows include those kept from an earlier call. A run that fails with RunFailedError is
    reported and left out of results.json, so the next call trains it again.
    """
    configs = build_configs(settings)
    rows = load_results(settings)
    settings.output_dir.mkdir(parents=True, exist_ok=True)
    finished = {(row["method"], row["seed"]) for row in rows if is_finished(row)}
    rows = [row for row in rows if (row["method"], row["seed"]) in finished]
    problems = stale_rows(rows, configs)
    if problems:
        raise ConfigError(problems)

    pending = [key for key in configs if key not in finished]
    kept_runs = len(configs) - len(pending)
    echo(f"comparing {', '.join(settings.methods)} with seeds {', '.join(map(str, settings.seeds))}: "
         f"{len(pending)} run(s) to train, {kept_runs} kept from {settings.output_dir / RESULTS_FILE}")
    failures: list[tuple[str, int, str]] = []
    for index, (method, seed) in enumerate(pending, 1):
        echo(f"[{index}/{len(pending)}] training {method} (seed {seed}) in {configs[(method, seed)].output_dir}")
        try:
            row = train_and_evaluate(configs[(method, seed)], settings)
        except RunFailedError as error:
            failures.append((method, seed, str(error)))
            echo(f"[{index}/{len(pending)}] {method} (seed {seed}) failed: {error}")
            continue
        rows = [existing for existing in rows if (existing["method"], existing["seed"]) != (method, seed)]
        rows.append(row)
        write_results(settings, rows)
        echo(
            f"[{index}/{len(pending)}] {method} (seed {seed}): ROUGE-Lsum {row['rougeLsum']:.2f}, "
            f"{row['wall_time_s']:.1f} s, {row['trainable_params']:,} trainable parameters"
        )

    write_results(settings, rows)
    for path in write_report(settings, rows, failures):
        echo(f"wrote {path}")
    return CompareResult(rows=rows, failures=failures)


def train_and_evaluate(config: Any, settings: CompareSettings) -> dict[str, Any]:
    """Train one run from scratch, evaluate it on the shared examples and return its results row.

    With `settings.isolate`, the run happens in a fresh process. On a CPU the trainer reports the
    peak resident memory of the whole process, which never goes down, so runs sharing one
    process would each report the largest peak so far instead of their own.
    """
    run_dir = Path(config.output_dir)
    if run_dir.exists():
        # A folder without a finished row is what a stopped comparison left behind.
        shutil.rmtree(run_dir)
    if not settings.isolate:
        return _train_and_evaluate_here(config, settings)

    import multiprocessing

    run_dir.mkdir(parents=True)
    row_path = run_dir / ".compare_row.json"
    context = multiprocessing.get_context("spawn")
    process = context.Process(target=_child_main, args=(config.to_dict(), settings, str(row_path)))
    process.start()
    try:
        process.join()
    except KeyboardInterrupt:
        process.terminate()
        process.join()
        raise
    outcome = json.loads(row_path.read_text(encoding="utf-8")) if row_path.is_file() else None
    row_path.unlink(missing_ok=True)
    if outcome is None:
        raise SumtuneError(
            f"training {config.method} (seed {config.seed}) ended without a result (exit code "
            f"{process.exitcode}); see the messages above, and run again to retry this run"
        )
    if "error" in outcome:
        error_class = RunFailedError if outcome.get("run_failed") else SumtuneError
        raise error_class(outcome["error"])
    return outcome["row"]


def _child_main(config_values: dict[str, Any], settings: CompareSettings, row_path: str) -> None:
    """Entry point of the process that trains and evaluates one run; writes its row or its error."""
    from sumtune.train import TrainConfig

    try:
        row = _train_and_evaluate_here(TrainConfig.from_dict(config_values), settings)
        outcome: dict[str, Any] = {"row": row}
    except SumtuneError as error:
        outcome = {"error": str(error), "run_failed": isinstance(error, RunFailedError)}
    Path(row_path).write_text(json.dumps(outcome), encoding="utf-8")


def _train_and_evaluate_here(config: Any, settings: CompareSettings) -> dict[str, Any]:
    from sumtune.evaluate import evaluate_run
    from sumtune.train import NonFiniteLossError, train

    run_dir = Path(config.output_dir)
    started = time.time()
    try:
        result = train(config)
    except (NonFiniteLossError, _out_of_memory_error()) as error:
        raise RunFailedError(str(error)) from error
    evaluation = evaluate_run(
        run_dir,
        settings.data,
        split=settings.eval_split,
        max_samples=settings.max_eval_samples,
        bootstrap=settings.bootstrap_resamples,
    )
    scores = per_example_scores(Path(evaluation.predictions_path))
    (run_dir / SCORES_FILE).write_text(json.dumps(scores), encoding="utf-8")

    trainable = int(result.trainable_params)
    total = int(result.total_params)
    return {
        "method": config.method,
        "seed": config.seed,
        "run_dir": str(run_dir),
        **{name: float(evaluation.scores[name]) for name in ROUGE_TYPES},
        "rouge_intervals": {name: list(evaluation.intervals[name]) for name in evaluation.intervals},
        "eval_examples": int(evaluation.count),
        "predictions": str(evaluation.predictions_path),
        "mean_generated_words": float(evaluation.gen_len),
        "trainable_params": trainable,
        "total_params": total,
        "trainable_percent": 100.0 * trainable / total if total else 0.0,
        "checkpoint_size_bytes": int(result.checkpoint_size_bytes),
        "train_tokens_per_second": float(result.train_tokens_per_second),
        "wall_time_s": float(result.wall_time_s),
        "peak_memory_mb": float(result.peak_memory_mb),
        "final_step": int(result.final_step),
        "stopped_early": bool(result.stopped_early),
        "started_at": started,
        "finished_at": time.time(),
        "config": result_config(config),
    }


def _out_of_memory_error() -> type[Exception]:
    import torch

    # torch 2.5 added torch.OutOfMemoryError; older versions only have the CUDA one.
    return getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def per_example_scores(predictions_path: Path) -> dict[str, list]:
    """Score each prediction of a predictions.jsonl file, for the paired bootstrap in the report."""
    from sumtune import metrics
    from sumtune.data import read_jsonl_records

    records = read_jsonl_records(predictions_path, required_fields=("prediction", "reference"))
    predictions = [record["prediction"] for _, record in records]
    references = [record["reference"] for _, record in records]
    result = metrics.rouge_scores(predictions, references)
    output: dict[str, list] = {"ids": [record.get("id") for _, record in records], "references": references}
    for name in ROUGE_TYPES:
        output[name] = [float(value) for value in result.per_example[name]]
    return output


def write_results(settings: CompareSettings, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write results.json atomically, rows sorted by method order and seed."""
    order = {method: index for index, method in enumerate(settings.methods)}
    ordered = sorted(rows, key=lambda row: (order.get(row["method"], len(order)), row["method"], row["seed"]))
    from sumtune import __version__

    document = {"sumtune_version": __version__, **settings.header(), "rows": ordered}
    path = settings.output_dir / RESULTS_FILE
    write_text_atomically(path, json.dumps(document, indent=2) + "\n")
    return path

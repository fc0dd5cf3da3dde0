"""Hyperparameter search with Optuna for one method: study setup, trials, pruning and the final report.

Each trial samples a configuration from the method's search space (see `sumtune.search_space`),
trains it with `sumtune.train.train` into `DIR/trials/STUDY/trial-NNNN/`, and returns the best
validation ROUGE of that run. Every validation score is reported to the pruner as it happens, so
a trial whose scores fall below the median of earlier trials at the same step stops early.

The study lives in a database: by default `sqlite:///DIR/study.db`, so that a stopped study
continues where it stopped, or any SQLAlchemy URL that several workers share (see docs/tuning.md).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sumtune.errors import ConfigError, SumtuneError
from sumtune.metrics import ROUGE_TYPES
from sumtune.search_space import SearchSpace, build_search_space, field_types, load_space_file
from sumtune.files import write_text_atomically
from sumtune.tune_report import retrain_command, write_study_plots, write_trials_csv

logger = logging.getLogger(__name__)

PRUNERS = ("median", "none")
# A worker that stops sending heartbeats for this long has its running trial marked failed and
# retried once, so a killed worker does not leave a trial "running" forever.
HEARTBEAT_INTERVAL_S = 60
HEARTBEAT_GRACE_S = 180
# Seconds a connection attempt to a database server may take before the URL counts as unreachable.
CONNECT_TIMEOUT_S = 10
# Seconds a SQLite writer waits for another worker's lock before giving up.
SQLITE_BUSY_TIMEOUT_S = 60
# Package to install for each database driver module that SQLAlchemy 2 imports; a bare
# postgresql:// URL means psycopg (version 3).
DRIVER_PACKAGES = {
    "psycopg2": "psycopg2-binary",
    "psycopg": "psycopg[binary]",
    "pymysql": "pymysql",
    "MySQLdb": "mysqlclient",
}


@dataclass
class TuneSettings:
    """Settings of one `sumtune tune` worker: the method, its search space and the study storage."""

    method: str
    model: str
    data: str
    output_dir: Path
    n_trials: int
    # Fixed TrainConfig values for every trial, and fixed options of the method.
    train_options: dict[str, Any] = field(default_factory=dict)
    method_options: dict[str, Any] = field(default_factory=dict)
    search_space_file: Path | None = None
    storage: str | None = None
    study_name: str | None = None
    objective: str = "rougeLsum"
    pruner: str = "median"
    pruner_startup_trials: int = 5
    sampler_seed: int | None = None
    timeout_s: float | None = None

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)

    @property
    def resolved_study_name(self) -> str:
        return self.study_name or f"sumtune-{self.method}"

    @property
    def storage_url(self) -> str:
        if self.storage:
            return self.storage
        return f"sqlite:///{(self.output_dir.resolve() / 'study.db').as_posix()}"


@dataclass
class TuneOutcome:
    """The study after this worker's trials, with the best trial and how to retrain it."""

    study: Any
    best_trial: Any | None
    best_config: Any | None
    retrain_command: str | None
    written: list[Path]


class PruningCallback:
    """Training callback that reports each validation score to Optuna and stops pruned trials."""

    def __init__(self, trial: Any, metric_key: str):
        self.trial = trial
        self.metric_key = metric_key
        self.pruned_at: int | None = None

    def on_evaluate(self, step: int, metrics: Mapping[str, float]) -> None:
        from sumtune.train import StopTraining

        if self.metric_key not in metrics:
            return
        self.trial.report(float(metrics[self.metric_key]), step)
        if self.trial.should_prune():
            self.pruned_at = step
            raise StopTraining(f"trial {self.trial.number} pruned at step {step}")


def prepare_study(settings: TuneSettings) -> tuple[SearchSpace, Any]:
    """Check the whole setup and return (search space, base TrainConfig), before any training.

    Raises ConfigError for an unknown method or objective, an invalid search space (range, type
    or unknown knob) and any fixed value or search bound that the configs' `validate()` rejects.
    """
    from sumtune.data import available_splits
    from sumtune.methods import METHODS, method_config_class
    from sumtune.train import TrainConfig

    problems: list[str] = []
    if settings.method not in METHODS:
        problems.append(f"unknown method {settings.method!r}; choose one of {', '.join(METHODS)}")
    if settings.objective not in ROUGE_TYPES:
        problems.append(f"unknown objective {settings.objective!r}; choose one of {', '.join(ROUGE_TYPES)}")
    if settings.pruner not in PRUNERS:
        problems.append(f"unknown pruner {settings.pruner!r}; choose one of {', '.join(PRUNERS)}")
    if settings.n_trials < 1:
        problems.append(f"n_trials is {settings.n_trials}, expected 1 or more")
    if problems:
        raise ConfigError(problems)

    overrides = load_space_file(settings.search_space_file) if settings.search_space_file else None
    source = str(settings.search_space_file or "search space")
    space = build_search_space(
        settings.method,
        overrides,
        field_types(TrainConfig),
        field_types(method_config_class(settings.method)),
        fixed_train=settings.train_options,
        fixed_method=settings.method_options,
        source=source,
    )

    _check_bounds(settings, space, source)
    if settings.train_options.get("max_eval_samples") == 0 or space.fixed_train.get("max_eval_samples") == 0:
        raise ConfigError([
            "max_eval_samples is 0, which turns validation off, but each trial is scored by its validation "
            f"{settings.objective}; set max_eval_samples to 1 or more"
        ])
    # Raises DataError for a missing file or folder now rather than in the first trial.
    available_splits(settings.data)
    return space, _train_config(settings, *space.reference_values(), settings.output_dir / "trials")


def _train_config(settings: TuneSettings, train_values: Mapping[str, Any], method_values: Mapping[str, Any], run_dir: Path):
    from sumtune.train import TrainConfig

    # The run keeps the checkpoint that is best by the objective, unless best_metric is set.
    values = {"best_metric": settings.objective, **settings.train_options, **train_values}
    method_options = {**settings.method_options, **method_values}
    return TrainConfig(
        method=settings.method,
        model=settings.model,
        data=settings.data,
        output_dir=str(run_dir),
        method_options=method_options,
        **values,
    )


def _check_bounds(settings: TuneSettings, space: SearchSpace, source: str) -> None:
    """Validate a config at each bound or choice of every knob, so a bad range fails before training.

    Each config varies one knob and keeps the others at their first bound. When a problem goes
    away as only that knob takes another bound, it is reported as that bound's problem. Problems
    that every config shares, such as a bad fixed value, are reported as they are.
    """
    run_dir = settings.output_dir / "trials"
    reference_train, reference_method = space.reference_values()

    def problems_with(knob: Any, value: Any) -> list[str]:
        train_values, method_values = dict(reference_train), dict(reference_method)
        if knob is not None:
            (train_values if knob.scope == "train" else method_values)[knob.name] = value
        try:
            return _train_config(settings, train_values, method_values, run_dir).validate()
        except (TypeError, ValueError, SumtuneError) as error:
            return [str(error)]

    everything = problems_with(None, None)
    attributed: list[str] = []
    explained: set[str] = set()
    for knob in space.knobs:
        found = [(value, problems_with(knob, value)) for value in knob.bounds()]
        for index, (value, problems) in enumerate(found):
            others = [other for position, (_, other) in enumerate(found) if position != index]
            for problem in problems:
                if problem not in everything:
                    everything.append(problem)
                if any(problem not in other for other in others):
                    attributed.append(
                        f"{source}: {knob.param_name(settings.method)} = {value!r} is invalid: {problem}"
                    )
                    explained.add(problem)
    remaining = [problem for problem in everything if problem not in explained]
    if attributed or remaining:
        raise ConfigError(attributed + remaining)


def open_storage(url: str) -> Any:
    """Connect to the study database and return an Optuna storage, or raise a clear SumtuneError.

    The connection is made here, so a wrong URL, a missing driver or a server that cannot be
    reached fails before any training starts.
    """
    import optuna
    import sqlalchemy.exc
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    from sqlalchemy.engine import make_url

    example = "sqlite:///runs/tune/study.db or postgresql+psycopg2://user:password@host/database"
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise SumtuneError(f"invalid storage URL {url!r}; expected a database URL such as {example}") from None
    display_url = parsed.render_as_string(hide_password=True)
    connect_args = _connect_args(parsed, display_url)
    is_sqlite = parsed.get_backend_name() == "sqlite"

    for attempt in range(3):
        try:
            with warnings.catch_warnings():
                # Heartbeats are marked experimental in Optuna 5.1.
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    url,
                    engine_kwargs={"connect_args": connect_args, "pool_pre_ping": True},
                    heartbeat_interval=HEARTBEAT_INTERVAL_S,
                    grace_period=HEARTBEAT_GRACE_S,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
                )
        except ImportError as error:
            # Optuna re-raises the driver's ModuleNotFoundError as a plain ImportError.
            missing = getattr(error.__cause__, "name", None) or getattr(error, "name", None) or "unknown"
            package = DRIVER_PACKAGES.get(missing, missing)
            raise SumtuneError(
                f"cannot open storage {display_url}: the database driver {missing!r} is not installed; "
                f"install it with `pip install {package}`"
            ) from None
        except sqlalchemy.exc.NoSuchModuleError:
            raise SumtuneError(
                f"invalid storage URL {display_url}: unknown database dialect {parsed.drivername!r}; expected a "
                f"URL such as {example}"
            ) from None
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as error:
            reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
            # Two SQLite workers creating the tables of a new file at once collide ("table
            # already exists", "UNIQUE constraint failed: alembic_version"); a second attempt
            # finds the tables in place.
            schema_race = isinstance(error, sqlalchemy.exc.IntegrityError | sqlalchemy.exc.OperationalError)
            if is_sqlite and schema_race and attempt < 2 and "unable to open" not in reason:
                time.sleep(1.0 + attempt)
                continue
            hint = (
                "check that the path names a SQLite file that this user can write" if is_sqlite
                else "check the host, port, user, password and database name, and that the server accepts "
                "connections from this machine"
            )
            raise SumtuneError(f"cannot connect to storage {display_url}: {reason}; {hint}") from None
    raise AssertionError("unreachable")


def _connect_args(parsed: Any, display_url: str) -> dict[str, Any]:
    """Return the driver's connection arguments; raise SumtuneError for a SQLite file in a missing folder."""
    if parsed.get_backend_name() != "sqlite":
        return {"connect_timeout": CONNECT_TIMEOUT_S}
    if parsed.database and parsed.database != ":memory:":
        folder = Path(parsed.database).parent
        if not folder.is_dir():
            raise SumtuneError(
                f"cannot open storage {display_url}: folder {folder} does not exist; create it or choose "
                "another path"
            )
    return {"timeout": SQLITE_BUSY_TIMEOUT_S}


def create_study(settings: TuneSettings, storage: Any) -> Any:
    """Create or load the study, and check that it searches the same method and objective."""
    import optuna

    if settings.pruner == "median":
        # Scores right after the first evaluations are noisy, so only prune once some trials
        # have finished; MedianPruner compares a trial to the median of earlier trials at the same step.
        pruner: optuna.pruners.BasePruner = optuna.pruners.MedianPruner(n_startup_trials=settings.pruner_startup_trials)
    else:
        pruner = optuna.pruners.NopPruner()
    # Each worker samples with its own seed unless one is given; workers with the same seed
    # would draw the same first configurations.
    sampler = optuna.samplers.TPESampler(seed=settings.sampler_seed)
    study = optuna.create_study(
        storage=storage,
        study_name=settings.resolved_study_name,
        direction="maximize",
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )
    expected = {"method": settings.method, "objective": settings.objective}
    stored = study.user_attrs
    mismatches = [
        f"study {study.study_name!r} was created with {key} {stored[key]!r}, but this worker uses "
        f"{value!r}; use the same --{key} or another --study-name"
        for key, value in expected.items()
        if key in stored and stored[key] != value
    ]
    if mismatches:
        raise ConfigError(mismatches)
    for key, value in expected.items():
        if key not in stored:
            study.set_user_attr(key, value)
    return study


def run_tune(
    settings: TuneSettings,
    *,
    echo: Callable[[str], None] = print,
    pruner: Any = None,
) -> TuneOutcome:
    """Run `settings.n_trials` trials of the study (more workers may add their own) and write the report.

    `pruner` replaces the pruner chosen by `settings.pruner`. Writes `trials.csv`, the plots and
    `best_config.yaml` into `settings.output_dir`, and returns the study with its best trial.
    """
    import optuna

    from sumtune.train import NonFiniteLossError

    space, _ = prepare_study(settings)
    settings.output_dir.mkdir(parents=True, exist_ok=True)
    storage = open_storage(settings.storage_url)
    # The progress line of each trial replaces Optuna's own log lines, including the traceback
    # it logs for a failed trial.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = create_study(settings, storage)
    if pruner is not None:
        study.pruner = pruner

    display_url = _hide_password(settings.storage_url)
    echo(
        f"study {study.study_name!r} in {display_url}: {len(study.trials)} trial(s) so far; "
        f"running {settings.n_trials} more, maximizing validation {settings.objective}"
    )
    objective = _make_objective(settings, space)
    # A sampled configuration can be invalid or diverge; that fails its trial only. Other errors
    # (unreadable data, a broken model) would fail every trial, so they stop the study.
    study.optimize(
        objective,
        n_trials=settings.n_trials,
        timeout=settings.timeout_s,
        catch=(ConfigError, NonFiniteLossError),
        callbacks=[_progress_printer(settings, echo)],
    )
    return finish_study(settings, space, study, echo=echo)


def _make_objective(settings: TuneSettings, space: SearchSpace) -> Callable[[Any], float]:
    import optuna

    from sumtune.train import train

    metric_key = f"eval/{settings.objective}"
    trials_dir = settings.output_dir / "trials" / _safe_name(settings.resolved_study_name)

    def objective(trial: optuna.Trial) -> float:
        train_values, method_values = space.sample(trial)
        run_dir = trials_dir / f"trial-{trial.number:04d}"
        if run_dir.exists():
            # Trial numbers are unique within a study, so this folder is left from a study
            # of the same name that was deleted from the database.
            logger.warning("removing %s, left over from an earlier study", run_dir)
            shutil.rmtree(run_dir)
        config = _train_config(settings, train_values, method_values, run_dir)
        problems = config.validate()
        if problems:
            trial.set_user_attr("fail_reason", "; ".join(problems))
            raise ConfigError(problems)
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")

        reporter = PruningCallback(trial, metric_key)
        try:
            result = train(config, callbacks=[reporter])
        except SumtuneError as error:
            trial.set_user_attr("fail_reason", str(error))
            raise
        trial.set_user_attr("final_step", int(result.final_step))
        trial.set_user_attr("wall_time_s", float(result.wall_time_s))
        if reporter.pruned_at is not None:
            raise optuna.TrialPruned(f"pruned at step {reporter.pruned_at}")
        value = (result.best_metrics or {}).get(metric_key)
        if value is None:
            trial.set_user_attr("fail_reason", f"no validation {settings.objective}")
            raise SumtuneError(
                f"trial {trial.number} finished without a validation {settings.objective}; "
                "the objective needs evaluation during training, so set eval_steps"
            )
        return float(value)

    return objective


def _progress_printer(settings: TuneSettings, echo: Callable[[str], None]) -> Callable[[Any, Any], None]:
    def print_progress(study: Any, trial: Any) -> None:
        state = trial.state.name.lower()
        params = " ".join(f"{name}={_format_value(value)}" for name, value in trial.params.items())
        duration = trial.duration.total_seconds() if trial.duration else 0.0
        if trial.state.name == "PRUNED" and trial.intermediate_values:
            step = max(trial.intermediate_values)
            result = f"at step {step}, {settings.objective} {trial.intermediate_values[step]:.2f}"
        elif trial.value is not None:
            result = f"{settings.objective} {trial.value:.2f}"
        else:
            result = str(trial.user_attrs.get("fail_reason", "no score")).replace("\n", " ")
        best = _best_trial(study)
        best_text = f"best: trial {best.number} ({best.value:.2f})" if best else "best: none yet"
        echo(f"trial {trial.number} {state}: {result} | {params} | {duration:.1f} s | {best_text}")

    return print_progress


def finish_study(settings: TuneSettings, space: SearchSpace, study: Any, *, echo: Callable[[str], None] = print) -> TuneOutcome:
    """Write trials.csv, the plots and the best config, and print the best trial and its command."""
    import yaml

    output_dir = settings.output_dir
    written = [write_trials_csv(study, output_dir / "trials.csv", settings.objective)]
    written += write_study_plots(study, output_dir, settings.objective, echo=echo)

    best = _best_trial(study)
    if best is None:
        echo("no trial completed, so there is no best configuration yet")
        return TuneOutcome(study=study, best_trial=None, best_config=None, retrain_command=None, written=written)

    train_values, method_values = space.values_from_params(best.params)
    best_dir = output_dir / "best"
    config = _train_config(settings, train_values, method_values, best_dir)
    config_path = output_dir / "best_config.yaml"
    write_text_atomically(config_path, yaml.safe_dump(config.to_dict(), sort_keys=False))
    written.append(config_path)

    command = retrain_command(config)
    echo(f"best trial: {best.number} with validation {settings.objective} {best.value:.2f}")
    for name, value in best.params.items():
        echo(f"  {name}: {_format_value(value)}")
    echo("retrain it with:")
    echo(f"  {command}")
    return TuneOutcome(study=study, best_trial=best, best_config=config, retrain_command=command, written=written)


def _best_trial(study: Any) -> Any | None:
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return max(complete, key=lambda trial: trial.value) if complete else None


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "study"


def _hide_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


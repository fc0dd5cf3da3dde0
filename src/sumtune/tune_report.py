"""Files and messages at the end of `sumtune tune`: trials.csv, the study plots and the retrain command."""

from __future__ import annotations

import csv
import shlex
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sumtune.files import replacing


def retrain_command(config: Any) -> str:
    """Return the `sumtune train` command line that trains `config` again.

    Fields equal to their TrainConfig default, and method options equal to the method's
    default, are left out to keep the command short.
    """
    from sumtune.cli.train import method_flag
    from sumtune.methods import method_config_class
    from sumtune.train.config import TrainConfig, cli_fields, flag_name

    defaults = TrainConfig().to_dict()
    values = config.to_dict()
    leading = ("method", "model", "data", "output_dir")
    argv = ["sumtune", "train"]
    for name in leading:
        argv += _flag_arguments(flag_name(name), values[name])
    for item in cli_fields():
        if item.name not in leading and values[item.name] != defaults[item.name]:
            argv += _flag_arguments(flag_name(item.name), values[item.name])

    method_defaults = method_config_class(config.method)().to_dict()
    for name, value in values["method_options"].items():
        if value != method_defaults.get(name):
            argv += _flag_arguments(method_flag(config.method, name), value)
    return shlex.join(argv)


def _flag_arguments(flag: str, value: Any) -> list[str]:
    if isinstance(value, bool):
        return [flag] if value else ["--no-" + flag.removeprefix("--")]
    if value is None:
        return [flag, "null"]
    if isinstance(value, list | tuple):
        return [flag, *(str(item) for item in value)]
    # str() of a float is its shortest exact form, so the value survives the round trip.
    return [flag, str(value)]


def write_trials_csv(study: Any, path: Path, objective: str) -> Path:
    """Write one row per trial: number, state, objective value, timing, parameters, worker and run folder."""
    trials = study.get_trials(deepcopy=False)
    param_names = sorted({name for trial in trials for name in trial.params})
    header = ["number", "state", objective, "last_step", "duration_s", "datetime_start", "datetime_complete",
              *param_names, "worker", "run_dir"]
    rows = []
    for trial in trials:
        steps = trial.intermediate_values
        rows.append([
            trial.number,
            trial.state.name,
            "" if trial.value is None else f"{trial.value:.4f}",
            max(steps) if steps else "",
            f"{trial.duration.total_seconds():.1f}" if trial.duration else "",
            trial.datetime_start.isoformat(timespec="seconds") if trial.datetime_start else "",
            trial.datetime_complete.isoformat(timespec="seconds") if trial.datetime_complete else "",
            *(trial.params.get(name, "") for name in param_names),
            trial.user_attrs.get("worker", ""),
            trial.user_attrs.get("run_dir", ""),
        ])
    with replacing(path) as temporary, temporary.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_study_plots(study: Any, output_dir: Path, objective: str, *, echo: Callable[[str], None] = print) -> list[Path]:
    """Save the optimization history, intermediate values and parameter importances as PNG files.

    Importances need at least two completed trials with varying parameters; with fewer, that
    plot is skipped with a message.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as optuna_plots

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    plots: list[tuple[str, Callable[[], Any]]] = []
    if complete:
        plots.append(("optimization_history.png", lambda: optuna_plots.plot_optimization_history(study, target_name=objective)))
    if any(trial.intermediate_values for trial in study.get_trials(deepcopy=False)):
        plots.append(("intermediate_values.png", lambda: optuna_plots.plot_intermediate_values(study)))
    if len(complete) >= 2:
        plots.append(("param_importances.png", lambda: optuna_plots.plot_param_importances(study, target_name=objective)))
    else:
        echo(f"parameter importances need 2 completed trials, found {len(complete)}; skipped param_importances.png")

    written = []
    for name, draw in plots:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                axes = draw()
            except (ValueError, RuntimeError, ZeroDivisionError) as error:
                echo(f"skipped {name}: {error}")
                plt.close("all")
                continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        path = output_dir / name
        with replacing(path) as temporary:
            figure.savefig(temporary, dpi=100)
        plt.close(figure)
        written.append(path)
    return written


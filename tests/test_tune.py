"""Tests for `sumtune tune`: search space format and checks, storage errors, and real studies on a tiny T5.

The studies train the tiny random T5 on real CNN/DailyMail articles for a few steps, so they
check the plumbing (trials, pruning, resuming, parallel workers, files written), not the quality.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sumtune.errors import ConfigError, SumtuneError
from sumtune.search_space import build_search_space, default_space_dict, field_types

CNNDM_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cnndm"
FRANK_FILE = CNNDM_DIR / "frank_cnndm_test250.jsonl"
SRC_DIR = Path(__file__).resolve().parents[1] / "src"
METHODS = ("prefix", "prompt", "adapter", "lora", "full")

needs_cnndm = pytest.mark.skipif(
    not FRANK_FILE.is_file(),
    reason=f"real CNN/DailyMail sample not found at {FRANK_FILE} (shared data folder missing)",
)

# Settings that keep one trial to a few seconds on a CPU: at most 4 steps, greedy decoding of 16 tokens.
FAST_SETTINGS = {
    "max_train_samples": 16,
    "max_eval_samples": 8,
    "max_source_length": 128,
    "max_target_length": 32,
    "max_new_tokens": 16,
    "num_beams": 1,
    "no_repeat_ngram_size": 0,
    "eval_steps": 2,
    "save_steps": 0,
    "logging_steps": 1,
    "tensorboard": False,
    "progress_bar": False,
}
# A small space so that trials stay short; the learning rate varies, so trials differ.
TINY_SPACE = {
    "use_defaults": False,
    "learning_rate": {"low": 1.0e-4, "high": 1.0e-1, "log": True},
    "batch_size": {"choices": [4, 8]},
    "max_steps": {"low": 2, "high": 4},
    "method_options": {"r": {"choices": [2, 4]}},
}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Train with one thread: on a shared 2-core machine, torch's busy-waiting threads slow tiny models down."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# -- search space format ------------------------------------------------------------------------


def train_and_method_types(method: str):
    from sumtune.methods import method_config_class
    from sumtune.train import TrainConfig

    return field_types(TrainConfig), field_types(method_config_class(method))


def space_for(method: str, overrides: dict | None, **fixed):
    return build_search_space(method, overrides, *train_and_method_types(method), **fixed)


def problems_of(method: str, overrides: dict) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        space_for(method, overrides)
    return caught.value.problems


@pytest.mark.parametrize("method", METHODS)
def test_default_space_valid_for_every_method(method, tmp_path):
    """Every built-in space parses, and every bound passes TrainConfig.validate()."""
    from sumtune.tune import TuneSettings, prepare_study

    settings = TuneSettings(method=method, model="t5-small", data="cnn_dailymail", output_dir=tmp_path, n_trials=1)
    space, base = prepare_study(settings)
    names = {knob.name for knob in space.knobs}
    assert {"learning_rate", "batch_size", "max_steps"} <= names
    learning_rate = next(knob for knob in space.knobs if knob.name == "learning_rate")
    assert learning_rate.log is True
    assert base.validate() == []


def test_default_space_has_method_knobs():
    expected = {"prefix": {"prefix_length"}, "prompt": {"prompt_length"}, "adapter": {"bottleneck_size"},
                "lora": {"r", "alpha"}, "full": set()}
    for method, knobs in expected.items():
        searched = {name for name, value in default_space_dict(method)["method_options"].items() if isinstance(value, dict)}
        assert searched == knobs, method


def test_yaml_override_merges_over_defaults(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(
        "learning_rate: {low: 1e-4, high: 1.0e-2, log: true}\n"  # 1e-4 is a string in YAML 1.1
        "batch_size: 16\n"
        "method_options:\n"
        "  r: {low: 4, high: 32, step: 4}\n"
        "  dropout: {low: 0.0, high: 0.3}\n",
        encoding="utf-8",
    )
    from sumtune.search_space import load_space_file

    space = space_for("lora", load_space_file(path))
    knobs = {knob.param_name("lora"): knob for knob in space.knobs}
    assert knobs["learning_rate"].low == pytest.approx(1e-4)
    assert knobs["learning_rate"].high == pytest.approx(1e-2)
    assert knobs["lora.r"].kind == "int"
    assert knobs["lora.r"].step == 4
    assert knobs["lora.dropout"].kind == "float"
    assert "lora.alpha" in knobs  # kept from the defaults
    assert "max_steps" in knobs
    assert "batch_size" not in knobs
    assert space.fixed_train == {"batch_size": 16}


def test_use_defaults_false_keeps_only_file():
    space = space_for("lora", {"use_defaults": False, "learning_rate": {"low": 0.001, "high": 0.01}})
    assert [knob.name for knob in space.knobs] == ["learning_rate"]


def test_command_line_value_removes_knob():
    space = space_for("lora", None, fixed_train={"max_steps": 10}, fixed_method={"r": 8})
    names = {knob.name for knob in space.knobs}
    assert "max_steps" not in names
    assert "r" not in names
    assert "alpha" in names


def test_command_line_and_file_clash():
    with pytest.raises(ConfigError) as caught:
        space_for("lora", {"max_steps": {"low": 2, "high": 4}}, fixed_train={"max_steps": 10})
    assert "max_steps is set both on the command line" in str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"learning_rate": {"low": 0.1, "high": 0.01}}, "low (0.1) must be below high (0.01)"),
        ({"learning_rate": {"low": 0.01, "high": 0.01}}, "low (0.01) must be below high (0.01)"),
        ({"learning_rate": {"low": 0.0, "high": 0.1, "log": True}}, "log scale needs low > 0"),
        ({"warmup_steps": {"low": -5, "high": 10, "log": True}}, "log scale needs low > 0"),
        ({"learning_rate": {"low": 0.001, "high": 0.1, "log": True, "step": 0.001}}, "log and step cannot be combined"),
        ({"learnig_rate": {"low": 0.001, "high": 0.1}}, "unknown knob 'learnig_rate'"),
        ({"method_options": {"rank": {"low": 2, "high": 8}}}, "unknown knob 'rank'"),
        ({"batch_size": {"low": 2.5, "high": 8.0}}, "does not match the field type int"),
        ({"batch_size": {"choices": ["eight", 16]}}, "choice 'eight' does not match the field type int"),
        ({"learning_rate": {"low": "small", "high": 0.1}}, "low is 'small', expected a number"),
        ({"learning_rate": {"low": 0.001, "high": 0.1, "scale": "log"}}, "unknown key(s) scale"),
        ({"learning_rate": {"low": 0.001}}, "expected low and high"),
        ({"batch_size": {"choices": []}}, "choices must be a non-empty list"),
        ({"max_steps": {"type": "int", "low": 1.5, "high": 4}}, "type int needs whole numbers"),
        ({"model": {"choices": ["a", "b"]}}, "'model' cannot be searched"),
        ({"tensorboard": {"low": 0, "high": 1}}, "does not match the field type bool"),
        ({"use_defaults": "yes"}, "use_defaults is 'yes'"),
    ],
)
def test_invalid_space_rejected(overrides, expected):
    problems = problems_of("lora", overrides)
    assert any(expected in problem for problem in problems), problems


def test_unknown_knob_suggests_name():
    problems = problems_of("lora", {"method_options": {"alhpa": {"low": 1, "high": 4}}})
    assert "did you mean 'alpha'?" in problems[0]


def test_all_problems_reported_at_once():
    problems = problems_of(
        "lora",
        {"learning_rate": {"low": 1, "high": 0.1}, "nonsense": 3, "method_options": {"r": {"low": 8, "high": 2}}},
    )
    assert len(problems) == 3


def test_bound_rejected_by_validate(tmp_path):
    """A range whose bound the configs' validate() rejects fails before any training."""
    from sumtune.tune import TuneSettings, prepare_study

    space_file = tmp_path / "space.yaml"
    space_file.write_text(yaml.safe_dump({"method_options": {"r": {"low": 0, "high": 8}},
                                          "warmup_ratio": {"low": 0.5, "high": 1.5}}))
    settings = TuneSettings(method="lora", model="t5-small", data="cnn_dailymail", output_dir=tmp_path / "out",
                            n_trials=1, search_space_file=space_file)
    with pytest.raises(ConfigError) as caught:
        prepare_study(settings)
    message = str(caught.value)
    assert "lora.r = 0 is invalid" in message
    assert "warmup_ratio = 1.5 is invalid" in message
    assert "warmup_ratio = 0.5" not in message


def test_sampled_values_in_space():
    import optuna

    space = space_for("lora", TINY_SPACE)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(20):
        trial = study.ask()
        train, method = space.sample(trial)
        assert 1e-4 <= train["learning_rate"] <= 1e-1
        assert train["batch_size"] in (4, 8)
        assert 2 <= train["max_steps"] <= 4 and isinstance(train["max_steps"], int)
        assert method["r"] in (2, 4)
        assert space.values_from_params(trial.params) == (train, method)
        study.tell(trial, 0.0)


# -- storage and command-line errors --------------------------------------------------------------


def test_unreachable_server_storage():
    from sumtune.tune import open_storage

    # Port 1 on the loopback interface has no server, so the connection is refused at once.
    with pytest.raises(SumtuneError) as caught:
        open_storage("postgresql+psycopg2://tuner:secret-password@127.0.0.1:1/studies")
    message = str(caught.value)
    assert "secret-password" not in message
    assert ("not installed" in message and "pip install psycopg2-binary" in message) or "cannot connect" in message


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:////nonexistent-folder/for/sumtune/study.db", "does not exist"),
        ("not a url", "invalid storage URL"),
        ("nosuchdialect://host/db", "unknown database dialect 'nosuchdialect'"),
    ],
)
def test_bad_storage_url(url, expected):
    from sumtune.tune import open_storage

    with pytest.raises(SumtuneError) as caught:
        open_storage(url)
    assert expected in str(caught.value)


def test_storage_that_cannot_be_opened(tmp_path):
    """A SQLite URL naming a folder fails to connect, with the database error in the message."""
    from sumtune.tune import open_storage

    with pytest.raises(SumtuneError) as caught:
        open_storage(f"sqlite:///{tmp_path}")
    assert "cannot connect to storage" in str(caught.value)
    assert "unable to open database file" in str(caught.value)


def test_cli_rejects_bad_input_before_training(tmp_path, capsys):
    """Bad search space, unknown method and unreachable storage each exit with status 2 and no trial."""
    from sumtune.cli.main import main

    bad_space = tmp_path / "bad.yaml"
    bad_space.write_text("learning_rate: {low: 0.1, high: 0.001}\nmethod_options: {rank: {low: 1, high: 2}}\n")
    common = ["--model", "t5-small", "--data", "cnn_dailymail", "--n-trials", "1"]
    cases = [
        (["--method", "lora", "--search-space", str(bad_space)], ["must be below high", "unknown knob 'rank'"]),
        (["--method", "bitfit"], ["unknown method 'bitfit'"]),
        (["--method", "lora", "--storage", "sqlite:////nonexistent-folder/x/study.db"], ["does not exist"]),
        (["--method", "lora", "--storage", "postgresql+psycopg2://tuner:secret@127.0.0.1:1/studies"],
         ["127.0.0.1:1/studies"]),
        (["--method", "lora", "--set", "max_eval_samples=0"], ["turns validation off"]),
    ]
    for index, (extra, expected) in enumerate(cases):
        output_dir = tmp_path / f"out-{index}"
        status = main(["tune", *common, "--output-dir", str(output_dir), *extra])
        error = capsys.readouterr().err
        assert status == 2, error
        assert error.startswith("sumtune tune: error: ")
        for text in expected:
            assert text in error
        assert "secret" not in error
        assert not (output_dir / "trials").exists()


# -- real studies on a tiny T5 --------------------------------------------------------------------


def read_jsonl(path: Path, count: int, skip: int = 0) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as stream:
        for index, line in enumerate(stream):
            if index < skip:
                continue
            record = json.loads(line)
            rows.append({"id": record["id"], "article": record["article"], "highlights": record["highlights"]})
            if len(rows) == count:
                break
    return rows


@pytest.fixture(scope="module")
def split_data(tmp_path_factory) -> Path:
    """A folder with 16 train, 8 validation and 8 test articles from the FRANK sample."""
    if not FRANK_FILE.is_file():
        pytest.skip(f"real CNN/DailyMail sample not found at {FRANK_FILE} (shared data folder missing)")
    folder = tmp_path_factory.mktemp("cnndm-split")
    for name, skip, count in (("train", 0, 16), ("validation", 16, 8), ("test", 24, 8)):
        with (folder / f"{name}.jsonl").open("w", encoding="utf-8") as stream:
            for row in read_jsonl(FRANK_FILE, count, skip):
                stream.write(json.dumps(row) + "\n")
    return folder


@pytest.fixture(scope="module")
def space_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("space") / "space.yaml"
    path.write_text(yaml.safe_dump(TINY_SPACE), encoding="utf-8")
    return path


def tune_settings(model_dir: Path, data: Path, output_dir: Path, space: Path, n_trials: int, **extra):
    from sumtune.tune import TuneSettings

    return TuneSettings(
        method="lora",
        model=str(model_dir),
        data=str(data),
        output_dir=output_dir,
        n_trials=n_trials,
        train_options=dict(FAST_SETTINGS),
        search_space_file=space,
        **extra,
    )


def assert_valid_png(path: Path) -> None:
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    assert len(data) > 5000, f"{path} is only {len(data)} bytes"
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] > 100
    assert pixels.shape[1] > 100
    assert pixels.std() > 0.01, f"{path} looks blank"


@pytest.mark.slow
@needs_cnndm
def test_study_resumes_and_writes_files(tiny_model_dir, split_data, space_file, tmp_path):
    import optuna

    from sumtune.tune import run_tune

    output_dir = tmp_path / "study"
    lines: list[str] = []
    run_tune(tune_settings(tiny_model_dir, split_data, output_dir, space_file, 2, sampler_seed=1), echo=lines.append)
    assert (output_dir / "study.db").is_file()
    assert sum(line.startswith("trial ") for line in lines) == 2

    lines.clear()
    outcome = run_tune(tune_settings(tiny_model_dir, split_data, output_dir, space_file, 3), echo=lines.append)
    assert "2 trial(s) so far" in lines[0]
    progress = [line for line in lines if line.startswith("trial ")]
    assert len(progress) == 3
    assert all("learning_rate=" in line and "| best:" in line for line in progress)

    study = optuna.load_study(study_name="sumtune-lora", storage=f"sqlite:///{output_dir / 'study.db'}")
    assert [trial.number for trial in study.trials] == [0, 1, 2, 3, 4]
    complete = [trial for trial in study.trials if trial.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 5  # the median pruner waits for 5 finished trials
    for trial in complete:
        metrics = json.loads((Path(trial.user_attrs["run_dir"]) / "metrics.json").read_text())
        assert trial.value == pytest.approx(metrics["best"]["eval/rougeLsum"])
        assert 0.0 <= trial.value <= 100.0
        assert trial.intermediate_values, "validation scores were not reported to the pruner"

    import csv

    with (output_dir / "trials.csv").open(encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert [int(row["number"]) for row in rows] == [0, 1, 2, 3, 4]
    assert {"state", "rougeLsum", "learning_rate", "batch_size", "max_steps", "lora.r", "worker"} <= set(rows[0])
    for row, trial in zip(rows, study.trials):
        assert float(row["learning_rate"]) == pytest.approx(trial.params["learning_rate"])

    for name in ("optimization_history.png", "param_importances.png", "intermediate_values.png"):
        assert_valid_png(output_dir / name)

    best = study.best_trial
    assert outcome.best_trial.number == best.number
    assert f"best trial: {best.number} with validation rougeLsum {best.value:.2f}" in lines
    assert outcome.retrain_command.startswith("sumtune train ")
    assert any(line.strip() == outcome.retrain_command for line in lines)
    saved = yaml.safe_load((output_dir / "best_config.yaml").read_text())
    assert saved["learning_rate"] == pytest.approx(best.params["learning_rate"])
    assert saved["method_options"]["r"] == best.params["lora.r"]


def test_retrain_command_parses_to_best_config(tmp_path):
    """The printed command, parsed by the real `sumtune train` parser, gives the best trial's config."""
    import shlex

    from sumtune.train import TrainConfig
    from sumtune.tune_report import retrain_command

    config = TrainConfig(method="lora", model="t5-small", data="my data/articles.jsonl", output_dir=str(tmp_path / "best"),
                         method_options={"r": 4, "alpha": 16.0, "targets": ["q", "k", "v"]},
                         learning_rate=0.0123, batch_size=4, max_steps=3, **FAST_SETTINGS)
    command = retrain_command(config)
    from sumtune.cli.main import build_parser
    from sumtune.cli.train import build_config

    words = shlex.split(command)
    assert words[:2] == ["sumtune", "train"]
    rebuilt = build_config(build_parser().parse_args(words[1:]))
    # The train command line keeps method options as strings until method_config() converts them.
    assert rebuilt.method_config().to_dict() == config.method_config().to_dict()
    rebuilt.method_options = config.method_options
    assert rebuilt.to_dict() == config.to_dict()


def test_retrain_command_options_of_each_method(tmp_path):
    """Method options of every method, booleans and nulls survive the printed command."""
    import shlex

    from sumtune.cli.main import build_parser
    from sumtune.cli.train import build_config
    from sumtune.train import TrainConfig
    from sumtune.tune_report import retrain_command

    options = {
        "prefix": {"prefix_length": 7, "reparametrize": False},
        "prompt": {"prompt_length": 9},
        "adapter": {"bottleneck_size": 12, "reduction_factor": None, "placement": "pfeiffer"},
        "lora": {"r": 2, "alpha": 3.5, "targets": ["q", "wo"]},
        "full": {},
    }
    for method, method_options in options.items():
        config = TrainConfig(method=method, model="t5-small", data="cnn_dailymail", output_dir=str(tmp_path),
                             method_options=method_options, learning_rate=1.2345e-4, tensorboard=False,
                             max_eval_samples=None, dropout_rate=0.05)
        words = shlex.split(retrain_command(config))
        rebuilt = build_config(build_parser().parse_args(words[1:]))
        expected = {**config.method_config().to_dict()}
        assert rebuilt.method_config().to_dict() == expected, method
        assert rebuilt.learning_rate == 1.2345e-4
        assert rebuilt.tensorboard is False


@pytest.mark.slow
@needs_cnndm
def test_pruned_trial_stops_training(tiny_model_dir, split_data, space_file, tmp_path):
    """A pruner that rejects every score stops the trial at its first evaluation."""
    import optuna

    from sumtune.tune import run_tune

    settings = tune_settings(tiny_model_dir, split_data, tmp_path / "pruned", space_file, 1)
    settings.train_options["max_steps"] = 6
    settings.search_space_file = None
    settings.method_options = {"r": 2}
    lines: list[str] = []
    outcome = run_tune(settings, echo=lines.append, pruner=optuna.pruners.ThresholdPruner(lower=1000.0))
    trial = outcome.study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert list(trial.intermediate_values) == [2]
    assert trial.user_attrs["final_step"] < 6
    assert any(line.startswith("trial 0 pruned: at step 2") for line in lines)
    assert outcome.best_trial is None
    assert any("no trial completed" in line for line in lines)


@pytest.mark.slow
@needs_cnndm
def test_invalid_sampled_combination_fails_trial(tiny_model_dir, split_data, tmp_path):
    """A sampled combination that validate() rejects fails its trial, and the study goes on."""
    import optuna

    from sumtune.tune import run_tune

    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"use_defaults": False, "warmup_steps": {"choices": [0, 5]},
                                     "warmup_ratio": {"choices": [0.0, 0.1]}}))
    output_dir = tmp_path / "study"
    output_dir.mkdir()
    storage = f"sqlite:///{output_dir / 'study.db'}"
    study = optuna.create_study(study_name="sumtune-lora", storage=storage, direction="maximize")
    study.enqueue_trial({"warmup_steps": 5, "warmup_ratio": 0.1})
    lines: list[str] = []
    settings = tune_settings(tiny_model_dir, split_data, output_dir, space, 1)
    outcome = run_tune(settings, echo=lines.append)
    trial = outcome.study.trials[0]
    assert trial.state == optuna.trial.TrialState.FAIL
    assert "warmup_steps (5) and warmup_ratio (0.1) are both set" in trial.user_attrs["fail_reason"]
    assert any(line.startswith("trial 0 fail: ") and "both set" in line for line in lines)
    assert not (output_dir / "trials" / "sumtune-lora" / "trial-0000").exists()


def test_missing_data_rejected_before_study(tmp_path):
    from sumtune.errors import DataError
    from sumtune.tune import TuneSettings, run_tune

    settings = TuneSettings(method="lora", model="t5-small", data=str(tmp_path / "missing.jsonl"),
                            output_dir=tmp_path / "out", n_trials=1)
    with pytest.raises(DataError):
        run_tune(settings, echo=lambda line: None)
    assert not (tmp_path / "out" / "study.db").exists()


@pytest.mark.slow
@needs_cnndm
def test_parallel_workers_run_distinct_trials(tiny_model_dir, split_data, space_file, tmp_path):
    import optuna

    output_dir = tmp_path / "shared-study"
    storage = f"sqlite:///{output_dir / 'study.db'}"
    arguments = ["tune", "--method", "lora", "--model", str(tiny_model_dir), "--data", str(split_data),
                 "--n-trials", "2", "--output-dir", str(output_dir), "--search-space", str(space_file),
                 "--storage", storage, "--study-name", "shared"]
    for name, value in FAST_SETTINGS.items():
        arguments += ["--set", f"{name}={value}"]
    output_dir.mkdir()
    environment = {**os.environ, "PYTHONPATH": str(SRC_DIR), "OMP_NUM_THREADS": "1"}
    workers = [
        subprocess.Popen([sys.executable, "-m", "sumtune", *arguments], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=environment)
        for _ in range(2)
    ]
    outputs = []
    for worker in workers:
        try:
            stdout, stderr = worker.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            for other in workers:
                other.kill()
            raise
        outputs.append(stdout)
        assert worker.returncode == 0, stderr

    study = optuna.load_study(study_name="shared", storage=storage)
    assert len(study.trials) == 4
    assert sorted(trial.number for trial in study.trials) == [0, 1, 2, 3]
    assert all(trial.state == optuna.trial.TrialState.COMPLETE for trial in study.trials)
    params = [tuple(sorted(trial.params.items())) for trial in study.trials]
    assert len(set(params)) == 4
    run_dirs = {trial.user_attrs["run_dir"] for trial in study.trials}
    assert len(run_dirs) == 4
    worker_ids = {trial.user_attrs["worker"] for trial in study.trials}
    assert len(worker_ids) == 2
    # The workers ran at the same time: some trial of one overlaps some trial of the other.
    overlapping = [
        (first.number, second.number)
        for first in study.trials
        for second in study.trials
        if first.user_attrs["worker"] != second.user_attrs["worker"]
        and first.datetime_start < second.datetime_complete
        and second.datetime_start < first.datetime_complete
    ]
    assert overlapping
    # Each worker printed progress for its own two trials.
    for stdout in outputs:
        assert sum(line.startswith("trial ") for line in stdout.splitlines()) == 2
    numbers = [
        int(line.split()[1]) for stdout in outputs for line in stdout.splitlines() if line.startswith("trial ")
    ]
    assert sorted(numbers) == [0, 1, 2, 3]

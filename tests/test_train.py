"""Tests of the training loop on a tiny T5 with real CNN/DailyMail articles.

Covers exact resumption, divergence handling, best-checkpoint selection with early stopping,
the metrics log, the run folder contents and the errors raised before training starts.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import FRANK_FILE, read_frank_articles
from sumtune.errors import CheckpointError, ConfigError, DataError
from sumtune.metrics import ROUGE_TYPES
from sumtune.model import T5
from sumtune.train import NonFiniteLossError, StopTraining, TrainConfig, train
from sumtune.train import loop
from sumtune.train.tracking import read_metrics_log

pytestmark = pytest.mark.skipif(not FRANK_FILE.is_file(), reason=f"real CNN/DailyMail sample not found at {FRANK_FILE}")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Run the tiny model on one thread. Its operations are too small to gain from more, and on a
    2-core machine shared with other processes two threads made training about 10 times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

# Keys whose values depend on wall-clock time, so two identical runs differ in them.
TIMING_KEYS = {"train/tokens_per_second"}


@pytest.fixture(scope="module")
def articles_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "articles.jsonl"
    with path.open("w", encoding="utf-8") as stream:
        for record in read_frank_articles(16):
            stream.write(json.dumps(record) + "\n")
    return path


def make_config(model_dir: Path, data: Path, output_dir: Path, **overrides) -> TrainConfig:
    """A few steps of prefix tuning (with the reparametrization MLP) and dropout on, so RNG state matters."""
    values = dict(
        method="prefix", model=str(model_dir), data=str(data), output_dir=str(output_dir),
        method_options={"prefix_length": 4, "hidden_size": 32},
        max_steps=4, batch_size=4, learning_rate=5e-3, seed=3, validation_size=4,
        max_source_length=96, max_target_length=32, eval_steps=2, save_steps=2, save_total_limit=5,
        logging_steps=1, num_beams=1, max_new_tokens=12, eval_batch_size=4, progress_bar=False,
    )
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def straight_run(tiny_model_dir, articles_file, tmp_path_factory):
    """Four uninterrupted steps; the reference for resumption and divergence."""
    output_dir = tmp_path_factory.mktemp("runs") / "straight"
    result = train(make_config(tiny_model_dir, articles_file, output_dir))
    return SimpleNamespace(result=result, dir=output_dir)


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def assert_same_tensors(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


class CrashAt:
    """Callback that simulates a crash (not a clean stop) at the end of one step."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, step: int) -> None:
        if step == self.step:
            raise RuntimeError("simulated crash")


def without_timing(records: list[dict]) -> list[dict]:
    return [{key: value for key, value in record.items() if key not in TIMING_KEYS} for record in records]


def test_resume_matches_uninterrupted_run(straight_run, tiny_model_dir, articles_file, tmp_path):
    config = make_config(tiny_model_dir, articles_file, tmp_path / "resumed")
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(config, callbacks=[CrashAt(3)])
    assert sorted(path.name for path in (tmp_path / "resumed" / "checkpoints").iterdir()) == ["step-2"]

    result = train(dataclasses.replace(config, resume=True))
    assert result.final_step == 4

    straight, resumed = straight_run.dir / "checkpoints" / "step-4", tmp_path / "resumed" / "checkpoints" / "step-4"
    assert_same_tensors(read_tensors(straight / "model.safetensors"), read_tensors(resumed / "model.safetensors"))
    straight_optimizer = torch.load(straight / "optimizer.pt", weights_only=True)
    resumed_optimizer = torch.load(resumed / "optimizer.pt", weights_only=True)
    for index, state in straight_optimizer["state"].items():
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(state[key], resumed_optimizer["state"][index][key])
    assert_same_tensors(read_tensors(straight_run.dir / "adapter" / "adapter_model.safetensors"),
                        read_tensors(tmp_path / "resumed" / "adapter" / "adapter_model.safetensors"))
    # The log of the resumed run drops the records of step 3 from before the crash, so it equals
    # the uninterrupted log apart from timings.
    assert without_timing(read_metrics_log(tmp_path / "resumed" / "metrics.jsonl")) == without_timing(
        read_metrics_log(straight_run.dir / "metrics.jsonl")
    )


def test_nan_loss_keeps_last_checkpoint(straight_run, tiny_model_dir, articles_file, tmp_path,
                                                       monkeypatch):
    original_forward = T5.forward
    training_calls = []

    def forward_with_nan_at_third_step(self, *args, **kwargs):
        output = original_forward(self, *args, **kwargs)
        if self.training:
            training_calls.append(1)
            if len(training_calls) == 3:
                output.loss = output.loss * float("nan")
        return output

    monkeypatch.setattr(T5, "forward", forward_with_nan_at_third_step)
    output_dir = tmp_path / "diverged"
    with pytest.raises(NonFiniteLossError) as error:
        train(make_config(tiny_model_dir, articles_file, output_dir))

    message = str(error.value)
    assert "step 3" in message
    assert str(output_dir / "checkpoints" / "step-2") in message
    assert sorted(path.name for path in (output_dir / "checkpoints").iterdir()) == ["step-2"]
    saved = read_tensors(output_dir / "checkpoints" / "step-2" / "model.safetensors")
    assert all(torch.isfinite(tensor).all() for tensor in saved.values())
    assert_same_tensors(saved, read_tensors(straight_run.dir / "checkpoints" / "step-2" / "model.safetensors"))


def test_metrics_log_is_complete(straight_run):
    records = read_metrics_log(straight_run.dir / "metrics.jsonl")
    steps = [record["step"] for record in records]
    assert steps == sorted(steps)
    train_records = [record for record in records if "train/loss" in record]
    eval_records = [record for record in records if "eval/rouge1" in record]
    assert [record["step"] for record in train_records] == [1, 2, 3, 4]
    assert [record["step"] for record in eval_records] == [2, 4]
    for record in train_records:
        for key in ("train/loss", "train/lr", "train/grad_norm", "train/tokens_per_second"):
            assert math.isfinite(record[key]), key
        assert record["train/tokens_per_second"] > 0
    for record in eval_records:
        assert set(record) == {"step", "eval/loss", "eval/gen_len", *(f"eval/{name}" for name in ROUGE_TYPES)}
    assert list((straight_run.dir / "tensorboard").glob("events.out.tfevents.*"))


def test_run_folder_is_self_describing(straight_run, tiny_model_dir):
    from sumtune.model.weights import read_config

    run = straight_run.dir
    fingerprint = read_config(tiny_model_dir).fingerprint()
    config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    assert config["base_model"] == {"name_or_path": str(tiny_model_dir.resolve()), "fingerprint": fingerprint}
    assert config["method_options"]["prefix_length"] == 4
    assert config["method_options"]["encoder_self"] is True  # resolved defaults are written too
    assert config["source_prefix"] == "summarize: "
    assert TrainConfig.from_yaml(run / "config.yaml").validate() == []

    adapter = json.loads((run / "adapter" / "adapter_config.json").read_text(encoding="utf-8"))
    assert adapter["method"] == "prefix"
    assert adapter["base_model"]["fingerprint"] == fingerprint

    summary = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert summary["final"]["step"] == 4
    assert summary["best"]["step"] == straight_run.result.best_step
    assert summary["train"]["steps"] == 4

    predictions = [json.loads(line) for line in (run / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(predictions) == 4
    assert all(set(record) == {"id", "article", "reference", "prediction"} for record in predictions)

    result = straight_run.result
    assert result.checkpoint_size_bytes == sum(path.stat().st_size for path in (run / "adapter").rglob("*")
                                               if path.is_file())
    assert 0 < result.trainable_params < result.total_params
    assert result.stopped_early is False
    assert "tokens/s" in result.report
    assert "peak memory" in result.report


def test_best_checkpoint_and_early_stopping(tiny_model_dir, articles_file, tmp_path, monkeypatch):
    scores = iter([10.0, 30.0, 20.0, 25.0, 40.0, 50.0])
    scored_predictions = []

    def scripted_scores(predictions, references, bootstrap=0, seed=0):
        scored_predictions.append(list(predictions))
        value = next(scores)
        return SimpleNamespace(means={name: value for name in ROUGE_TYPES}), {}, 5.0

    monkeypatch.setattr(loop, "score_predictions", scripted_scores)
    output_dir = tmp_path / "best"
    config = make_config(tiny_model_dir, articles_file, output_dir, method="lora", method_options={"r": 2},
                         max_steps=6, eval_steps=1, save_steps=1, save_total_limit=10, early_stopping_patience=2)
    result = train(config)

    assert result.final_step == 4
    assert result.stopped_early is True
    assert "early stopping" in result.stop_reason
    assert result.best_step == 2
    assert result.best_metrics["eval/rougeLsum"] == 30.0
    assert result.final_metrics["eval/rougeLsum"] == 25.0
    # adapter/ contains the weights of step 2, and predictions.jsonl that step's predictions.
    assert_same_tensors(read_tensors(output_dir / "adapter" / "adapter_model.safetensors"),
                        read_tensors(output_dir / "checkpoints" / "step-2" / "model.safetensors"))
    written = [json.loads(line)["prediction"] for line in (output_dir / "predictions.jsonl").read_text().splitlines()]
    assert written == scored_predictions[1]
    summary = json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))
    assert summary["best"]["step"] == 2
    assert summary["final"]["step"] == 4


def test_callback_stop_ends_cleanly(tiny_model_dir, articles_file, tmp_path):
    class StopAfterFirstEvaluation:
        def on_evaluate(self, step, metrics):
            assert set(metrics) == {"eval/loss", "eval/gen_len", *(f"eval/{name}" for name in ROUGE_TYPES)}
            raise StopTraining("budget spent")

    output_dir = tmp_path / "stopped"
    config = make_config(tiny_model_dir, articles_file, output_dir, eval_steps=1, save_steps=0, precision="bf16")
    result = train(config, callbacks=[StopAfterFirstEvaluation()])
    assert result.final_step == 1
    assert result.stopped_early is True
    assert result.stop_reason == "budget spent"
    assert (output_dir / "checkpoints" / "step-1").is_dir()  # the end of a run is always saved
    assert (output_dir / "adapter" / "adapter_config.json").is_file()


def test_time_limit_and_no_evaluation(tiny_model_dir, articles_file, tmp_path):
    output_dir = tmp_path / "limited"
    (output_dir / "checkpoints").mkdir(parents=True)
    (output_dir / "notes.txt").write_text("kept", encoding="utf-8")
    config = make_config(tiny_model_dir, articles_file, output_dir, max_train_minutes=1e-6, max_eval_samples=0,
                         overwrite_output_dir=True)
    result = train(config)
    assert result.final_step == 1
    assert "time limit" in result.stop_reason
    assert result.best_step is None
    assert (output_dir / "adapter" / "adapter_model.safetensors").is_file()  # final weights without evaluation
    assert not (output_dir / "predictions.jsonl").exists()
    assert (output_dir / "notes.txt").read_text(encoding="utf-8") == "kept"  # only run files are replaced


@pytest.mark.parametrize("method", ["prefix", "prompt", "adapter", "lora", "full"])
def test_every_method_trains_and_reloads(method, tiny_model_dir, articles_file, tmp_path):
    from sumtune.methods import load_model_with_method

    output_dir = tmp_path / method
    config = make_config(tiny_model_dir, articles_file, output_dir, method=method, method_options={},
                         max_steps=1, max_eval_samples=0, save_steps=0)
    result = train(config)
    assert result.final_step == 1
    assert 0 < result.trainable_params <= result.total_params
    checkpoint = read_tensors(output_dir / "checkpoints" / "step-1" / "model.safetensors")
    assert sum(tensor.numel() for tensor in checkpoint.values()) == result.trainable_params
    model, tokenizer, loaded_config = load_model_with_method(output_dir / "adapter")
    assert loaded_config.method == method
    assert tokenizer.pad_token_id == 0


def test_existing_run_needs_resume_or_overwrite(straight_run, tiny_model_dir, articles_file):
    with pytest.raises(ConfigError, match="already contains a run"):
        train(make_config(tiny_model_dir, articles_file, straight_run.dir))


def test_resume_on_other_base_is_rejected(straight_run, tiny_gated_model_dir, articles_file):
    config = make_config(tiny_gated_model_dir, articles_file, straight_run.dir, resume=True)
    with pytest.raises(CheckpointError, match="resume with the base model the run started with"):
        train(config)


def test_resume_without_checkpoint(tiny_model_dir, articles_file, tmp_path):
    with pytest.raises(CheckpointError, match="contains no checkpoint"):
        train(make_config(tiny_model_dir, articles_file, tmp_path / "empty", resume=True))


def test_model_that_is_not_t5_is_rejected(articles_file, tmp_path):
    model_dir = tmp_path / "bert"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}), encoding="utf-8")
    with pytest.raises(CheckpointError, match="model_type='bert'"):
        train(make_config(model_dir, articles_file, tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_data_error_comes_before_training(tiny_model_dir, articles_file, tmp_path):
    with pytest.raises(DataError, match="missing column 'body'"):
        train(make_config(tiny_model_dir, articles_file, tmp_path / "run", text_column="body"))
    assert not (tmp_path / "run").exists()


def test_invalid_values_are_reported_together(tiny_model_dir, articles_file, tmp_path):
    config = make_config(tiny_model_dir, articles_file, tmp_path / "run", learning_rate=0.0, precision="fp16",
                         method_options={"prefix_length": 0})
    with pytest.raises(ConfigError) as error:
        train(config)
    assert len(error.value.problems) == 3

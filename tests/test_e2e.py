"""End to end through the real command line: train, evaluate and summarize on real CNN/DailyMail articles."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import FRANK_FILE, read_frank_articles
from sumtune.cli.main import main
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


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_train_evaluate_summarize(tiny_model_dir, tmp_path, capsys):
    rows = read_frank_articles(22)
    train_file = write_jsonl(tmp_path / "train.jsonl", rows[:16])
    test_file = write_jsonl(tmp_path / "test.jsonl", rows[16:])
    run = tmp_path / "run"

    status = main([
        "train", "--method", "lora", "--model", str(tiny_model_dir), "--data", str(train_file),
        "--output-dir", str(run), "--max-steps", "3", "--batch-size", "4", "--learning-rate", "1e-2",
        "--max-source-length", "64", "--max-target-length", "24", "--validation-size", "4",
        "--eval-steps", "2", "--save-steps", "2", "--logging-steps", "1", "--num-beams", "1",
        "--max-new-tokens", "10", "--eval-batch-size", "8", "--lora-r", "4", "--lora-targets", "q", "v", "o",
        "--no-progress-bar",
    ])
    assert status == 0
    report = capsys.readouterr().out
    assert "training finished after 3 steps" in report
    assert "tokens/s" in report

    for name in ("config.yaml", "metrics.json", "metrics.jsonl", "predictions.jsonl",
                 "adapter/adapter_config.json", "adapter/adapter_model.safetensors",
                 "checkpoints/step-2/trainer_state.json", "checkpoints/step-3/trainer_state.json"):
        assert (run / name).is_file(), name
    adapter = json.loads((run / "adapter" / "adapter_config.json").read_text(encoding="utf-8"))
    assert adapter["config"]["targets"] == ["q", "v", "o"]

    # --resume alone continues with the run's saved settings; the flag raises the step budget.
    status = main(["train", "--resume", "--output-dir", str(run), "--max-steps", "4"])
    assert status == 0
    assert "training finished after 4 steps" in capsys.readouterr().out
    assert (run / "checkpoints" / "step-4" / "trainer_state.json").is_file()

    records = read_metrics_log(run / "metrics.jsonl")
    steps = [record["step"] for record in records]
    assert steps == sorted(steps)
    losses = [record["train/loss"] for record in records if "train/loss" in record]
    assert len(losses) == 4
    assert all(math.isfinite(loss) for loss in losses)
    assert [record["step"] for record in records if "eval/rougeLsum" in record] == [2, 3, 4]

    status = main(["evaluate", "--run", str(run), "--data", str(test_file), "--bootstrap", "100", "--json"])
    assert status == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["count"] == 6
    predictions = read_jsonl(run / "eval" / "test" / "predictions.jsonl")
    assert [record["id"] for record in predictions] == [row["id"] for row in rows[16:]]

    summaries_file = tmp_path / "summaries.jsonl"
    status = main(["summarize", "--run", str(run), "--input", str(test_file), "--output", str(summaries_file),
                   "--quiet"])
    assert status == 0
    summaries = read_jsonl(summaries_file)
    assert [record["id"] for record in summaries] == [row["id"] for row in rows[16:]]
    # summarize --run uses the run's source prefix, length limit and generation settings, as
    # evaluate --run does, so both give the same summaries.
    assert [record["summary"] for record in summaries] == [record["prediction"] for record in predictions]

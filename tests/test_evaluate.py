"""Tests for `sumtune evaluate` and `evaluate_run`: predictions, ROUGE against rouge-score, run settings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from conftest import FRANK_FILE, read_frank_articles
from sumtune.cli.main import main
from sumtune.errors import CheckpointError
from sumtune.evaluate import evaluate_run
from sumtune.train import TrainConfig, train

pytestmark = pytest.mark.skipif(not FRANK_FILE.is_file(), reason=f"real CNN/DailyMail sample not found at {FRANK_FILE}")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Run the tiny model on one thread. Its operations are too small to gain from more, and on a
    2-core machine shared with other processes two threads made training about 10 times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def data_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("evaluate-data")
    records = read_frank_articles(20)
    files = {"train": folder / "train.jsonl", "test": folder / "test.jsonl"}
    for name, rows in (("train", records[:12]), ("test", records[12:])):
        files[name].write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return files


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, data_files, tmp_path_factory) -> Path:
    """Two LoRA steps without evaluation: a run folder whose adapter contains the final weights."""
    output_dir = tmp_path_factory.mktemp("evaluate-runs") / "lora"
    train(TrainConfig(
        method="lora", model=str(tiny_model_dir), data=str(data_files["train"]), output_dir=str(output_dir),
        method_options={"r": 2}, max_steps=2, batch_size=4, learning_rate=1e-2, max_source_length=64,
        max_target_length=24, max_eval_samples=0, num_beams=1, max_new_tokens=10, eval_batch_size=4,
        progress_bar=False,
    ))
    return output_dir


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_scores_match_rouge_score_package(run_dir, data_files):
    from rouge_score import rouge_scorer

    result = evaluate_run(run_dir, str(data_files["test"]), "test", max_samples=6, bootstrap=200)
    assert result.predictions_path == run_dir / "eval" / "test" / "predictions.jsonl"
    records = read_records(result.predictions_path)
    expected_rows = read_frank_articles(20)[12:18]
    assert [record["id"] for record in records] == [row["id"] for row in expected_rows]
    assert [record["reference"] for record in records] == [row["highlights"] for row in expected_rows]
    assert [record["article"] for record in records] == [row["article"] for row in expected_rows]

    # An independent reference: rouge-score itself, with stemming, over the written predictions.
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for name in ("rouge1", "rouge2", "rougeL"):
        values = [scorer.score(r["reference"], r["prediction"])[name].fmeasure * 100 for r in records]
        assert result.scores[name] == pytest.approx(sum(values) / len(values), abs=1e-9)
    assert result.gen_len == pytest.approx(sum(len(r["prediction"].split()) for r in records) / len(records))
    assert result.count == 6
    for name, (low, high) in result.intervals.items():
        assert low <= result.scores[name] <= high
    saved = json.loads((run_dir / "eval" / "test" / "metrics.json").read_text(encoding="utf-8"))
    assert saved["rougeLsum"] == result.scores["rougeLsum"]


def test_predictions_match_direct_generation(run_dir, data_files, tmp_path):
    from sumtune.methods import load_model_with_method
    from sumtune.model import GenerationConfig, generate

    result = evaluate_run(run_dir, str(data_files["test"]), "test", max_samples=4, bootstrap=0,
                          output=tmp_path / "predictions.jsonl")
    records = read_records(result.predictions_path)

    settings = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    model, tokenizer, _ = load_model_with_method(run_dir / "adapter")
    model.eval()
    generation = GenerationConfig(max_new_tokens=settings["max_new_tokens"], num_beams=settings["num_beams"],
                                  length_penalty=settings["length_penalty"],
                                  no_repeat_ngram_size=settings["no_repeat_ngram_size"])
    for record in records:
        ids = tokenizer(settings["source_prefix"] + record["article"], max_length=settings["max_source_length"],
                        truncation=True, return_tensors="pt")
        tokens = generate(model, ids["input_ids"], ids["attention_mask"], generation)[0]
        assert tokenizer.decode(tokens, skip_special_tokens=True).strip() == record["prediction"]


def test_run_settings_apply_and_overrides_win(run_dir, data_files, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    settings = yaml.safe_load((copy / "config.yaml").read_text(encoding="utf-8"))
    settings["max_new_tokens"] = 2
    (copy / "config.yaml").write_text(yaml.safe_dump(settings), encoding="utf-8")
    short = evaluate_run(copy, str(data_files["test"]), "test", max_samples=3, bootstrap=0)
    assert short.gen_len <= 2  # a SentencePiece piece never spans two words
    longer = evaluate_run(copy, str(data_files["test"]), "test", max_samples=3, bootstrap=0, max_new_tokens=10,
                          output=tmp_path / "longer.jsonl")
    assert longer.gen_len > short.gen_len


def test_cli_json_output(run_dir, data_files, capsys):
    status = main(["evaluate", "--run", str(run_dir), "--data", str(data_files["test"]), "--max-samples", "3",
                   "--bootstrap", "100", "--json"])
    assert status == 0
    output = json.loads(capsys.readouterr().out)
    assert set(output) == {"rouge1", "rouge2", "rougeL", "rougeLsum", "intervals", "gen_len", "count", "predictions"}
    assert output["count"] == 3
    assert set(output["intervals"]) == {"rouge1", "rouge2", "rougeL", "rougeLsum"}


def test_cli_base_model_table(tiny_model_dir, data_files, tmp_path, capsys):
    output = tmp_path / "base.jsonl"
    status = main(["evaluate", "--model", str(tiny_model_dir), "--data", str(data_files["test"]), "--max-samples",
                   "2", "--num-beams", "2", "--max-new-tokens", "6", "--output", str(output)])
    assert status == 0
    text = capsys.readouterr().out
    assert "rougeLsum" in text
    assert "95% CI" in text
    assert "examples: 2" in text
    assert "mean generated length" in text
    assert len(read_records(output)) == 2


def test_folder_without_run_is_rejected(data_files, tmp_path, capsys):
    status = main(["evaluate", "--run", str(tmp_path), "--data", str(data_files["test"])])
    assert status == 2
    assert "not a sumtune run folder" in capsys.readouterr().err


def test_missing_adapter_is_reported(run_dir, data_files, tmp_path):
    copy = tmp_path / "unfinished"
    copy.mkdir()
    shutil.copy(run_dir / "config.yaml", copy / "config.yaml")
    with pytest.raises(CheckpointError, match="no trained adapter"):
        evaluate_run(copy, str(data_files["test"]), "test")


def test_bf16_evaluation_runs(run_dir, data_files, tmp_path):
    result = evaluate_run(run_dir, str(data_files["test"]), "test", max_samples=2, bootstrap=0, precision="bf16",
                          output=tmp_path / "bf16.jsonl", device=torch.device("cpu"))
    assert result.count == 2

"""Tests for `sumtune compare`: bad input, the noise rule, and a real comparison on a tiny T5 that resumes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sumtune.compare import CompareSettings
from sumtune.compare_report import (
    SCORES_FILE,
    compare_pair,
    format_mean,
    paired_bootstrap_interval,
    summarize,
)
from sumtune.errors import ConfigError

CNNDM_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cnndm"
FRANK_FILE = CNNDM_DIR / "frank_cnndm_test250.jsonl"

needs_cnndm = pytest.mark.skipif(
    not FRANK_FILE.is_file(),
    reason=f"real CNN/DailyMail sample not found at {FRANK_FILE} (shared data folder missing)",
)

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
ROW_FIELDS = {
    "method", "seed", "run_dir", "rouge1", "rouge2", "rougeL", "rougeLsum", "eval_examples",
    "trainable_params", "total_params", "trainable_percent", "checkpoint_size_bytes",
    "train_tokens_per_second", "wall_time_s", "peak_memory_mb",
}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Train with one thread: on a shared 2-core machine, torch's busy-waiting threads slow tiny models down."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# -- statistics of the report ---------------------------------------------------------------------


def test_summarize_matches_numpy():
    values = [31.0, 33.5, 32.25]
    mean, spread = summarize(values)
    assert mean == pytest.approx(np.mean(values))
    assert spread == pytest.approx(np.std(values, ddof=1))
    assert summarize([5.0]) == (5.0, None)
    assert format_mean([5.0]) == "5.00"
    assert format_mean([1.0, 3.0]) == "2.00 ± 1.41"


def test_paired_bootstrap_constant_shift():
    rng = np.random.default_rng(0)
    base = rng.uniform(10, 40, size=50)
    low, high = paired_bootstrap_interval(base + 2.5, base)
    assert low == pytest.approx(2.5)
    assert high == pytest.approx(2.5)


def test_paired_bootstrap_matches_loop():
    """The vectorized interval equals a plain loop over the same resampled indices."""
    rng = np.random.default_rng(1)
    scores_a, scores_b = rng.uniform(0, 50, size=30), rng.uniform(0, 50, size=30)
    low, high = paired_bootstrap_interval(scores_a, scores_b, n_resamples=200, seed=7)
    indices = np.random.default_rng(7).integers(0, 30, size=(200, 30))
    means = sorted(float(np.mean([scores_a[i] - scores_b[i] for i in row])) for row in indices)
    assert low == pytest.approx(np.quantile(means, 0.025))
    assert high == pytest.approx(np.quantile(means, 0.975))


def test_per_example_scores_match_rouge_score(tmp_path):
    """Per-example ROUGE-1/2/L equal Google's rouge-score package run directly on the texts."""
    from rouge_score import rouge_scorer

    from sumtune.compare import per_example_scores

    records = [
        {"id": "a", "prediction": "The council approved the budget on Tuesday.",
         "reference": "City council approves new budget.\nDebate lasted hours."},
        {"id": "b", "prediction": "Police arrested two men after the robbery.",
         "reference": "Two men were arrested by police."},
        {"id": "c", "prediction": "", "reference": "Storm cuts power to thousands."},
    ]
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    scores = per_example_scores(path)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for index, record in enumerate(records):
        expected = scorer.score(record["reference"], record["prediction"])
        for name in ("rouge1", "rouge2", "rougeL"):
            assert scores[name][index] == pytest.approx(100 * expected[name].fmeasure)
    assert scores["ids"] == ["a", "b", "c"]
    assert scores["rougeLsum"][2] == 0.0


def write_scores(run_dir: Path, scores: np.ndarray) -> None:
    run_dir.mkdir(parents=True)
    count = len(scores)
    document = {"ids": [str(i) for i in range(count)], "references": [f"ref {i}" for i in range(count)],
                "rougeLsum": [float(value) for value in scores]}
    (run_dir / SCORES_FILE).write_text(json.dumps(document))


def make_rows(tmp_path: Path, per_method: dict[str, list[np.ndarray]]) -> list[dict]:
    rows = []
    for method, runs in per_method.items():
        for seed, scores in enumerate(runs):
            run_dir = tmp_path / f"{method}-seed{seed}"
            write_scores(run_dir, scores)
            rows.append({"method": method, "seed": seed, "run_dir": str(run_dir), "rougeLsum": float(scores.mean())})
    return rows


def test_noise_rule_clear_gap(tmp_path):
    rng = np.random.default_rng(2)
    base = rng.uniform(10, 40, size=40)
    rows = make_rows(tmp_path, {
        "lora": [base + 6.0 + rng.normal(0, 0.2, 40) for _ in range(3)],
        "prompt": [base + rng.normal(0, 0.2, 40) for _ in range(3)],
    })
    gap = compare_pair("lora", "prompt", rows, n_resamples=500)
    assert gap.gap == pytest.approx(6.0, abs=0.3)
    assert gap.interval[0] > 0
    assert gap.real, gap.reason


def test_noise_rule_gap_within_seed_spread(tmp_path):
    """A gap smaller than the seed spread is noise even when the bootstrap interval excludes 0."""
    rng = np.random.default_rng(3)
    base = rng.uniform(10, 40, size=40)
    rows = make_rows(tmp_path, {
        "lora": [base + 1.0 + offset for offset in (-3.0, 0.0, 3.0)],
        "prompt": [base + offset for offset in (-3.0, 0.0, 3.0)],
    })
    gap = compare_pair("lora", "prompt", rows, n_resamples=500)
    assert gap.interval[0] > 0  # every example is exactly 1.0 better on average over seeds
    assert not gap.real
    assert "seed standard deviations" in gap.reason


def test_noise_rule_overlapping_examples(tmp_path):
    rng = np.random.default_rng(4)
    rows = make_rows(tmp_path, {"lora": [rng.uniform(0, 40, 40)], "prompt": [rng.uniform(0, 40, 40)]})
    gap = compare_pair("lora", "prompt", rows, n_resamples=500)
    assert gap.interval[0] < 0 < gap.interval[1]
    assert not gap.real
    assert "contains 0" in gap.reason


# -- bad input ------------------------------------------------------------------------------------


def test_unknown_method_rejected(tmp_path):
    from sumtune.compare import build_configs

    settings = CompareSettings(model="t5-small", data="cnn_dailymail", methods=["lora", "bitfit", "ia3"],
                               output_dir=tmp_path, budget_steps=5)
    with pytest.raises(ConfigError) as caught:
        build_configs(settings)
    message = str(caught.value)
    assert "'bitfit', 'ia3'" in message
    assert "prefix, prompt, adapter, lora, full" in message


def test_budget_sets_same_limit_for_every_run(tmp_path):
    from sumtune.compare import build_configs

    settings = CompareSettings(model="t5-small", data="cnn_dailymail", methods=["lora", "prompt"], output_dir=tmp_path,
                               seeds=[1, 2], budget_minutes=2.5, train_options={"max_steps": 100},
                               method_train_options={"prompt": {"learning_rate": 0.3}})
    configs = build_configs(settings)
    assert sorted(configs) == [("lora", 1), ("lora", 2), ("prompt", 1), ("prompt", 2)]
    for (method, seed), config in configs.items():
        assert config.max_train_minutes == 2.5
        assert config.max_steps == 100
        assert config.seed == seed
        assert config.output_dir == str(tmp_path / "runs" / f"{method}-seed{seed}")
    assert configs[("prompt", 1)].learning_rate == 0.3
    assert configs[("lora", 1)].learning_rate == 3e-4

    settings.budget_minutes = None
    settings.budget_steps = 7
    settings.train_options = {}
    assert {config.max_steps for config in build_configs(settings).values()} == {7}

    settings.method_train_options["prompt"]["max_steps"] = 50
    with pytest.raises(ConfigError) as caught:
        build_configs(settings)
    assert "--budget-steps 7 already sets it" in str(caught.value)


def test_set_values_parsed_by_type():
    from sumtune.cli.compare import parse_value, split_assignments

    assert parse_value("8") == 8
    assert parse_value("1e-4") == 1e-4
    assert parse_value("true") is True
    assert parse_value("null") is None
    assert parse_value("[q, v]") == ["q", "v"]
    assert parse_value("summarize: ") == "summarize: "
    shared, per_method, options = split_assignments(
        ["warmup_steps=10", "prompt.learning_rate=0.3", "lora.r=16", "lora.targets=[q, k]"], ["lora", "prompt"]
    )
    assert shared == {"warmup_steps": 10}
    assert per_method == {"prompt": {"learning_rate": 0.3}}
    assert options == {"lora": {"r": 16, "targets": ["q", "k"]}}


def test_invalid_settings_reported_together(tmp_path):
    from sumtune.compare import build_configs

    settings = CompareSettings(model="t5-small", data="cnn_dailymail", methods=["lora", "prompt"], output_dir=tmp_path,
                               budget_steps=5, train_options={"learning_rate": -1.0},
                               method_options={"lora": {"r": 0}})
    with pytest.raises(ConfigError) as caught:
        build_configs(settings)
    problems = caught.value.problems
    assert any(problem.startswith("lora:") and "lora.r" in problem for problem in problems)
    assert any(problem.startswith("prompt:") and "learning_rate" in problem for problem in problems)


def test_cli_bad_input_exits_before_training(tmp_path, capsys):
    from sumtune.cli.main import main

    output_dir = tmp_path / "out"
    cases = [
        (["--methods", "lora,bitfit"], "unknown method(s) 'bitfit'"),
        (["--methods", "lora", "--set", "lora.rank=4"], "'rank' is neither a TrainConfig field nor a lora option"),
        (["--methods", "lora", "--set", "prompt.learning_rate=0.3"], "'prompt' is not one of the methods in use"),
        (["--methods", "lora", "--set", "learning_rate=-1"], "learning_rate (--learning-rate) must be"),
    ]
    for extra, expected in cases:
        status = main(["compare", "--model", "t5-small", "--data", "cnn_dailymail", "--output-dir", str(output_dir),
                       "--budget-steps", "3", *extra])
        error = capsys.readouterr().err
        assert status == 2, error
        assert expected in error
        assert not (output_dir / "runs").exists()


def test_cli_rejects_single_file_data(tmp_path, capsys):
    from sumtune.cli.main import main

    data = tmp_path / "articles.jsonl"
    data.write_text(json.dumps({"article": "A storm hit the coast.", "highlights": "Storm hits coast."}) + "\n")
    status = main(["compare", "--model", "t5-small", "--data", str(data), "--methods", "lora",
                   "--output-dir", str(tmp_path / "out"), "--budget-steps", "3"])
    assert status == 2
    assert "is a single file" in capsys.readouterr().err


def test_cli_budget_options_exclusive(tmp_path, capsys):
    from sumtune.cli.main import main

    with pytest.raises(SystemExit) as caught:
        main(["compare", "--model", "m", "--data", "d", "--methods", "lora", "--output-dir", str(tmp_path),
              "--budget-steps", "3", "--budget-minutes", "1"])
    assert caught.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


# -- a real comparison on a tiny T5 ---------------------------------------------------------------


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


def assert_valid_png(path: Path) -> None:
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    assert len(data) > 5000, f"{path} is only {len(data)} bytes"
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] > 100
    assert pixels.shape[1] > 100
    assert pixels.std() > 0.01, f"{path} looks blank"


def compare_settings(model_dir: Path, data: Path, output_dir: Path, methods: list[str], seeds=(1, 2),
                     isolate: bool = False) -> CompareSettings:
    return CompareSettings(
        model=str(model_dir),
        data=str(data),
        methods=methods,
        output_dir=output_dir,
        seeds=list(seeds),
        isolate=isolate,
        budget_steps=4,
        train_options=dict(FAST_SETTINGS),
        method_train_options={"prompt": {"learning_rate": 0.1}},
        max_eval_samples=8,
        bootstrap_resamples=200,
    )


@pytest.mark.slow
@needs_cnndm
def test_compare_writes_results_and_resumes(tiny_model_dir, split_data, tmp_path, monkeypatch):
    from sumtune.compare import run_compare

    # The process that trains the isolated run reads this when it imports torch.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")

    output_dir = tmp_path / "compare"
    lines: list[str] = []
    first_result = run_compare(compare_settings(tiny_model_dir, split_data, output_dir, ["lora", "prompt"]),
                               echo=lines.append)
    assert "4 run(s) to train, 0 kept" in lines[0]
    assert first_result.failures == []
    first = json.loads((output_dir / "results.json").read_text())
    assert len(first["rows"]) == 4
    finished_at = {(row["method"], row["seed"]): row["finished_at"] for row in first["rows"]}
    metrics_mtimes = {key: (Path(row["run_dir"]) / "metrics.json").stat().st_mtime_ns
                      for key, row in zip(finished_at, first["rows"])}

    # The second call adds two methods with one seed, each trained in its own process. Full
    # fine-tuning with a learning rate of 1e30 diverges, which fails that run only.
    lines.clear()
    settings = compare_settings(tiny_model_dir, split_data, output_dir, ["lora", "prompt", "adapter", "full"],
                                seeds=[1], isolate=True)
    settings.method_train_options["full"] = {"learning_rate": 1e30}
    result = run_compare(settings, echo=lines.append)
    rows = result.rows
    assert "2 run(s) to train, 2 kept" in lines[0]
    trained = [line for line in lines if "] training " in line]
    assert len(trained) == 2
    assert "adapter (seed 1)" in trained[0]
    assert "full (seed 1)" in trained[1]
    assert [(method, seed) for method, seed, _ in result.failures] == [("full", 1)]
    assert "training stopped at step 2" in result.failures[0][2]

    results = json.loads((output_dir / "results.json").read_text())
    assert results["budget"] == {"steps": 4, "minutes": None}
    assert results["rows"] == rows
    assert [(row["method"], row["seed"]) for row in rows] == [
        ("lora", 1), ("lora", 2), ("prompt", 1), ("prompt", 2), ("adapter", 1)]
    for row in rows:
        assert ROW_FIELDS <= set(row), ROW_FIELDS - set(row)
        key = (row["method"], row["seed"])
        if key in finished_at:
            assert row["finished_at"] == finished_at[key]
            assert (Path(row["run_dir"]) / "metrics.json").stat().st_mtime_ns == metrics_mtimes[key]
        assert Path(row["run_dir"]) == output_dir / "runs" / f"{row['method']}-seed{row['seed']}"
        assert row["final_step"] == 4
        assert row["eval_examples"] == 8
        assert 0.0 <= row["rougeLsum"] <= 100.0
        assert row["trainable_percent"] == pytest.approx(100 * row["trainable_params"] / row["total_params"])
        assert row["checkpoint_size_bytes"] > 0
        assert row["wall_time_s"] > 0
        assert row["train_tokens_per_second"] > 0

    # Each run was evaluated on the same test examples, and its ROUGE matches its own predictions.
    from sumtune import metrics

    references = None
    for row in rows:
        assert Path(row["predictions"]) == Path(row["run_dir"]) / "eval" / "test" / "predictions.jsonl"
        predictions = [json.loads(line) for line in Path(row["predictions"]).read_text().splitlines()]
        run_references = [record["reference"] for record in predictions]
        references = references or run_references
        assert run_references == references
        scored = metrics.rouge_scores([record["prediction"] for record in predictions], run_references)
        assert row["rougeLsum"] == pytest.approx(scored.means["rougeLsum"], abs=1e-6)
    test_references = [record["highlights"] for record in read_jsonl(split_data / "test.jsonl", 8)]
    assert references == test_references

    # Exact trainable count of LoRA r=8 on q and v of the tiny model: 2 x (64 x 8 + 8 x 64) per layer
    # and projection, over 2 encoder self, 2 decoder self and 2 decoder cross-attention sublayers.
    lora_rows = [row for row in rows if row["method"] == "lora"]
    assert lora_rows[0]["trainable_params"] == 6 * 2 * (64 * 8 + 8 * 64)

    report = (output_dir / "report.md").read_text()
    table = [line for line in report.splitlines() if line.startswith("| ") and "seed" not in line]
    for method, seeds in (("lora", "1,2"), ("prompt", "1,2"), ("adapter", "1")):
        assert any(line.startswith(f"| {method} | {seeds} |") for line in table), report
    assert "±" in report
    assert "Rule:" in report
    assert "## Runs that failed" in report
    assert "- full (seed 1): " in report
    for pair in ("lora vs prompt", "prompt vs lora"):
        if pair in report:
            break
    else:
        raise AssertionError("report lacks the lora/prompt comparison")
    assert report.count("within the noise") + report.count("real difference") >= 3 + 1

    for name in ("rouge_vs_params.png", "validation_loss.png", "time_memory.png"):
        assert_valid_png(output_dir / name)

    # Changing a finished run's settings is an error, raised before any training.
    settings.method_options = {"lora": {"r": 4}}
    with pytest.raises(ConfigError) as caught:
        run_compare(settings, echo=lines.append)
    assert "lora-seed1 was trained with other settings" in str(caught.value)
    assert "'method_options'" not in str(caught.value)
    assert "method_options {} -> {'r': 4}" in str(caught.value)


@needs_cnndm
def test_compare_rejects_changed_budget(tiny_model_dir, split_data, tmp_path):
    from sumtune.compare import load_results, write_results

    settings = compare_settings(tiny_model_dir, split_data, tmp_path, ["lora"])
    write_results(settings, [])
    settings.budget_steps = 10
    with pytest.raises(ConfigError) as caught:
        load_results(settings)
    assert "budget" in str(caught.value)
    assert "another --output-dir" in str(caught.value)

"""Tests of `sumtune score` and `sumtune baseline lead3` through the command-line entry point."""

from __future__ import annotations

import io
import json
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from sumtune.baselines import lead3
from sumtune.cli.main import main
from sumtune.metrics import ROUGE_TYPES, rouge_scores

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cnndm"
needs_data = pytest.mark.skipif(
    not DATA_DIR.is_dir(), reason=f"CNN/DailyMail sample data not found at {DATA_DIR}"
)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def run_cli(capsys, *arguments: str) -> tuple[int, str, str]:
    status = main(list(arguments))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


CAT_ROWS = [
    {"id": "a", "prediction": "The cat sat on the mat.", "reference": "the cat sat"},
    {"id": "b", "prediction": "the dog ran", "reference": "the dog ran"},
]


# ---------------------------------------------------------------------------------------------
# sumtune score: results
# ---------------------------------------------------------------------------------------------


@needs_data
def test_score_reproduces_frank_per_system(capsys):
    # FRANK publishes per-summary ROUGE-1/2/L F-scores computed without sentence splitting,
    # so its ROUGE-L corresponds to rougeL. The per-system means must agree within 0.1.
    path = DATA_DIR / "frank_cnndm_test250_outputs.jsonl"
    published: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        for name, key in (
            ("rouge1", "rouge_1_f_score"),
            ("rouge2", "rouge_2_f_score"),
            ("rougeL", "rouge_l_f_score"),
        ):
            published[row["system"]][name].append(row["frank_rouge"][key] * 100)

    status, out, err = run_cli(
        capsys, "score", "--input", str(path), "--group-by", "system", "--json"
    )

    assert status == 0, err
    systems = json.loads(out)
    assert sorted(systems) == ["BART", "BertSum", "BottomUp", "PointerGenerator", "Seq2Seq"]
    for system, scores in systems.items():
        assert scores["count"] == 250
        for name, values in published[system].items():
            expected = sum(values) / len(values)
            assert scores[name] == pytest.approx(expected, abs=0.1), (system, name)
        # The outputs are tokenized with " . " between sentences and contain no newline.
        # rougeLsum exceeds rougeL only if they were split into sentences.
        assert scores["rougeLsum"] > scores["rougeL"] + 5, system


def test_score_json_keys_and_values(tmp_path, capsys):
    path = write_jsonl(tmp_path / "predictions.jsonl", CAT_ROWS)

    status, out, err = run_cli(capsys, "score", "--input", str(path), "--json")

    assert status == 0, err
    scores = json.loads(out)
    assert set(scores) == {*ROUGE_TYPES, "count"}
    assert scores["count"] == 2
    # Hand-computed: 66.67 for the first row (3 of 6 unigrams, all 3 reference unigrams) and
    # 100 for the exact match.
    assert scores["rouge1"] == pytest.approx((200 / 3 + 100) / 2)
    assert scores["rouge2"] == pytest.approx((400 / 7 + 100) / 2)


def test_score_table_output(tmp_path, capsys):
    path = write_jsonl(tmp_path / "predictions.jsonl", CAT_ROWS)

    status, out, err = run_cli(capsys, "score", "--input", str(path))

    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["metric", "F1", "x100"]
    assert lines[1].split() == ["rouge1", "83.33"]
    assert lines[-1] == "examples: 2"


def test_score_summary_field_fallback(tmp_path, capsys):
    rows = [{"summary": row["prediction"], "reference": row["reference"]} for row in CAT_ROWS]
    path = write_jsonl(tmp_path / "outputs.jsonl", rows)

    status, out, err = run_cli(capsys, "score", "--input", str(path), "--json")

    assert status == 0, err
    assert json.loads(out)["rouge1"] == pytest.approx((200 / 3 + 100) / 2)


def test_score_custom_fields(tmp_path, capsys):
    rows = [{"generated": "the cat sat", "gold": "the cat sat", "prediction": "nothing"}]
    path = write_jsonl(tmp_path / "outputs.jsonl", rows)

    status, out, err = run_cli(
        capsys,
        "score",
        "--input",
        str(path),
        "--prediction-field",
        "generated",
        "--reference-field",
        "gold",
        "--json",
    )

    assert status == 0, err
    assert json.loads(out)["rouge1"] == pytest.approx(100.0)


def test_score_group_by_table(tmp_path, capsys):
    rows = [
        {**CAT_ROWS[0], "system": "A"},
        {**CAT_ROWS[1], "system": "B"},
        {**CAT_ROWS[1], "system": "A"},
    ]
    path = write_jsonl(tmp_path / "outputs.jsonl", rows)

    status, out, err = run_cli(capsys, "score", "--input", str(path), "--group-by", "system")

    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["system", *ROUGE_TYPES, "count"]
    assert lines[1].split()[0] == "A"
    assert lines[1].split()[-1] == "2"
    assert lines[2].split() == ["B", "100.00", "100.00", "100.00", "100.00", "1"]


def test_score_bootstrap_intervals(tmp_path, capsys):
    rows = [
        {"prediction": f"the cat sat on mat number {index}", "reference": "the cat sat on the mat"}
        for index in range(30)
    ] + [{"prediction": "completely different words", "reference": "the cat sat"}] * 10
    path = write_jsonl(tmp_path / "predictions.jsonl", rows)

    status, out, err = run_cli(
        capsys, "score", "--input", str(path), "--bootstrap", "200", "--seed", "3", "--json"
    )

    assert status == 0, err
    scores = json.loads(out)
    assert set(scores["intervals"]) == set(ROUGE_TYPES)
    for name in ROUGE_TYPES:
        low, high = scores["intervals"][name]
        assert low < scores[name] < high


def test_score_reads_stdin(monkeypatch, capsys):
    data = "".join(json.dumps(row) + "\n" for row in CAT_ROWS).encode("utf-8")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))

    status, out, err = run_cli(capsys, "score", "--input", "-", "--json")

    assert status == 0, err
    assert json.loads(out)["count"] == 2


# ---------------------------------------------------------------------------------------------
# sumtune score: input errors
# ---------------------------------------------------------------------------------------------


def test_score_missing_reference_field(tmp_path, capsys):
    rows = [CAT_ROWS[0], CAT_ROWS[1], {"id": "c", "prediction": "text", "ref": "text"}]
    path = write_jsonl(tmp_path / "predictions.jsonl", rows)

    status, out, err = run_cli(capsys, "score", "--input", str(path))

    assert status == 2
    assert out == ""
    assert f"{path} line 3" in err
    assert "missing field 'reference'" in err
    assert "fields present: id, prediction, ref" in err
    assert "--reference-field" in err
    assert "Traceback" not in err


def test_score_missing_prediction_field(tmp_path, capsys):
    path = write_jsonl(tmp_path / "predictions.jsonl", [{"output": "a", "reference": "a"}])

    status, _, err = run_cli(capsys, "score", "--input", str(path))

    assert status == 2
    assert f"{path} line 1" in err
    assert "'prediction' and 'summary'" in err
    assert "--prediction-field" in err


def test_score_missing_explicit_field_later_line(tmp_path, capsys):
    rows = [{"text": "a", "reference": "a"}, {"reference": "b"}]
    path = write_jsonl(tmp_path / "predictions.jsonl", rows)

    status, _, err = run_cli(capsys, "score", "--input", str(path), "--prediction-field", "text")

    assert status == 2
    assert f"{path} line 2: missing field 'text'" in err


def test_score_malformed_json(tmp_path, capsys):
    path = tmp_path / "predictions.jsonl"
    path.write_text(
        json.dumps(CAT_ROWS[0]) + "\n" + '{"prediction": "a", "reference": \n', encoding="utf-8"
    )

    status, _, err = run_cli(capsys, "score", "--input", str(path))

    assert status == 2
    assert f"{path} line 2" in err
    assert "invalid JSON" in err


def test_score_non_utf8(tmp_path, capsys):
    path = tmp_path / "predictions.jsonl"
    path.write_bytes(
        (json.dumps(CAT_ROWS[0]) + "\n").encode("utf-8")
        + b'{"prediction": "caf\xe9", "reference": "cafe"}\n'
    )

    status, _, err = run_cli(capsys, "score", "--input", str(path))

    assert status == 2
    assert f"{path} line 2" in err
    assert "UTF-8" in err


def test_score_empty_file(tmp_path, capsys):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n", encoding="utf-8")

    status, _, err = run_cli(capsys, "score", "--input", str(path))

    assert status == 2
    assert str(path) in err
    assert "empty" in err


def test_score_missing_file(tmp_path, capsys):
    path = tmp_path / "absent.jsonl"

    status, _, err = run_cli(capsys, "score", "--input", str(path))

    assert status == 2
    assert "not found" in err
    assert str(path) in err


def test_score_non_string_prediction(tmp_path, capsys):
    path = write_jsonl(tmp_path / "predictions.jsonl", [{"prediction": None, "reference": "a"}])

    status, _, err = run_cli(capsys, "score", "--input", str(path))

    assert status == 2
    assert f"{path} line 1: field 'prediction' is null, expected a string" in err


def test_score_missing_group_field(tmp_path, capsys):
    rows = [{**CAT_ROWS[0], "system": "A"}, CAT_ROWS[1]]
    path = write_jsonl(tmp_path / "predictions.jsonl", rows)

    status, _, err = run_cli(capsys, "score", "--input", str(path), "--group-by", "system")

    assert status == 2
    assert f"{path} line 2: missing group field 'system'" in err


def test_score_negative_bootstrap(tmp_path, capsys):
    path = write_jsonl(tmp_path / "predictions.jsonl", CAT_ROWS)

    with pytest.raises(SystemExit) as exit_info:
        main(["score", "--input", str(path), "--bootstrap", "-1"])

    assert exit_info.value.code == 2
    assert "invalid count -1" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# sumtune baseline lead3
# ---------------------------------------------------------------------------------------------


@needs_data
def test_baseline_lead3_json(capsys):
    path = DATA_DIR / "frank_cnndm_test250.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()][:40]
    predictions = [lead3(row["article"]) for row in rows]
    expected = rouge_scores(predictions, [row["highlights"] for row in rows])

    status, out, err = run_cli(
        capsys, "baseline", "lead3", "--data", str(path), "--max-samples", "40", "--json"
    )

    assert status == 0, err
    scores = json.loads(out)
    assert scores["count"] == 40
    for name in ROUGE_TYPES:
        assert scores[name] == pytest.approx(expected.means[name])


def test_baseline_lead3_table(tmp_path, capsys):
    rows = [
        {
            "id": "1",
            "article": "The cat sat. The dog ran. The bird flew. The fish swam.",
            "highlights": "The cat sat.\nThe dog ran.\nThe bird flew.",
        }
    ]
    path = write_jsonl(tmp_path / "test.jsonl", rows)

    status, out, err = run_cli(
        capsys, "baseline", "lead3", "--data", str(path), "--bootstrap", "50"
    )

    assert status == 0, err
    assert "95% CI" in out
    rows_of_words = [line.split() for line in out.splitlines()]
    assert ["rouge1", "100.00", "[100.00,", "100.00]"] in rows_of_words
    assert "examples: 1" in out
    assert "mean summary length: 9.0 words" in out


def test_baseline_lead3_custom_columns(tmp_path, capsys):
    rows = [{"document": "One. Two. Three. Four.", "summary": "One. Two. Three."}]
    path = write_jsonl(tmp_path / "test.jsonl", rows)

    status, out, err = run_cli(
        capsys,
        "baseline",
        "lead3",
        "--data",
        str(path),
        "--text-column",
        "document",
        "--summary-column",
        "summary",
        "--json",
    )

    assert status == 0, err
    assert json.loads(out)["rouge1"] == pytest.approx(100.0)


def test_baseline_lead3_missing_column(tmp_path, capsys):
    path = write_jsonl(tmp_path / "test.jsonl", [{"document": "One. Two.", "highlights": "One."}])

    status, _, err = run_cli(capsys, "baseline", "lead3", "--data", str(path))

    assert status == 2
    assert "missing column 'article'" in err
    assert "--text-column" in err

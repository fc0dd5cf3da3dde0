"""Tests for sumtune.data: loading, validation errors, split forms and atomic JSONL writing."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import stat
import sys
from pathlib import Path

import pytest

from sumtune.data import (
    Example,
    available_splits,
    is_single_file,
    load_examples,
    load_examples_with_report,
    read_jsonl_records,
    split_train_validation,
    write_jsonl,
)
from sumtune.errors import DataError

CNNDM_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cnndm"
FRANK_FILE = CNNDM_DIR / "frank_cnndm_test250.jsonl"

needs_cnndm = pytest.mark.skipif(
    not FRANK_FILE.is_file(),
    reason=f"real CNN/DailyMail sample not found at {FRANK_FILE} (shared data folder missing)",
)


def read_raw_rows(path: Path, count: int | None = None) -> list[dict]:
    """Read a JSONL file with the json module alone, as an independent reference."""
    rows = []
    with path.open(encoding="utf-8") as stream:
        for line in stream:
            rows.append(json.loads(line))
            if count is not None and len(rows) == count:
                break
    return rows


@pytest.fixture(scope="module")
def real_rows() -> list[dict]:
    if not FRANK_FILE.is_file():
        pytest.skip(f"real CNN/DailyMail sample not found at {FRANK_FILE}")
    return [
        {"id": row["id"], "article": row["article"], "highlights": row["highlights"]}
        for row in read_raw_rows(FRANK_FILE, 6)
    ]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def record(article: object = "An article.", highlights: object = "A summary.", **extra) -> str:
    return json.dumps({"article": article, "highlights": highlights, **extra})


# ---------------------------------------------------------------------------------------------
# Real data
# ---------------------------------------------------------------------------------------------


@needs_cnndm
def test_frank_file_loads_all_rows():
    reference = read_raw_rows(FRANK_FILE)
    examples, report = load_examples_with_report(str(FRANK_FILE), "test")

    assert len(reference) == 250
    assert len(examples) == 250
    assert report.rows_read == 250
    assert report.rows_used == 250
    assert report.skipped_empty == 0
    assert report.split == "test"
    assert report.source == str(FRANK_FILE)
    assert [example.id for example in examples] == [row["id"] for row in reference]
    assert [example.text for example in examples] == [row["article"] for row in reference]
    assert [example.summary for example in examples] == [row["highlights"] for row in reference]
    assert all(isinstance(example, Example) for example in examples)


@needs_cnndm
def test_frank_file_max_samples_and_inference():
    reference = read_raw_rows(FRANK_FILE, 7)
    examples, report = load_examples_with_report(
        str(FRANK_FILE), summary_column=None, max_samples=7
    )

    assert [example.id for example in examples] == [row["id"] for row in reference]
    assert all(example.summary is None for example in examples)
    assert report.rows_read == 7
    assert report.rows_used == 7


# ---------------------------------------------------------------------------------------------
# JSON lines: validation errors
# ---------------------------------------------------------------------------------------------


def test_jsonl_missing_text_column(tmp_path):
    path = write_lines(tmp_path / "news.jsonl", [record(), '{"body": "x", "highlights": "y"}'])

    with pytest.raises(DataError) as caught:
        load_examples(str(path))

    message = str(caught.value)
    assert str(path) in message
    assert "line 2" in message
    assert "'article'" in message
    assert "body, highlights" in message
    assert "--text-column" in message


def test_jsonl_missing_summary_column(tmp_path):
    path = write_lines(tmp_path / "news.jsonl", ['{"article": "x", "summary": "y"}'])

    with pytest.raises(DataError) as caught:
        load_examples(str(path))

    message = str(caught.value)
    assert str(path) in message
    assert "line 1" in message
    assert "'highlights'" in message
    assert "--summary-column" in message
    assert "article, summary" in message


def test_jsonl_missing_summary_allowed_for_inference(tmp_path):
    path = write_lines(tmp_path / "news.jsonl", ['{"article": "only text"}'])

    examples = load_examples(str(path), summary_column=None)

    assert examples == [Example(text="only text", summary=None, id=None)]


def test_jsonl_custom_columns(tmp_path):
    path = write_lines(tmp_path / "news.jsonl", ['{"doc": "text", "abstract": "sum", "id": 17}'])

    examples = load_examples(str(path), text_column="doc", summary_column="abstract")

    assert examples == [Example(text="text", summary="sum", id="17")]


def test_jsonl_malformed_line(tmp_path):
    broken = '{"article": "Police said" "highlights": "x"}'
    path = write_lines(tmp_path / "news.jsonl", [record(), "", broken])

    with pytest.raises(DataError) as caught:
        load_examples(str(path))

    message = str(caught.value)
    assert str(path) in message
    assert "line 3" in message
    assert '{"article": "Police said"' in message
    assert "invalid JSON" in message


def test_jsonl_line_not_an_object(tmp_path):
    path = write_lines(tmp_path / "news.jsonl", [record(), '["article", "highlights"]'])

    with pytest.raises(DataError) as caught:
        load_examples(str(path))

    message = str(caught.value)
    assert str(path) in message
    assert "line 2" in message
    assert "array" in message


def test_jsonl_blank_lines_ignored(tmp_path):
    path = tmp_path / "news.jsonl"
    content = "\n" + record("first") + "\n   \n\n" + record("second") + "\n\n"
    path.write_text(content, encoding="utf-8")

    examples, report = load_examples_with_report(str(path))

    assert [example.text for example in examples] == ["first", "second"]
    assert report.rows_read == 2


def test_jsonl_line_numbers_count_blank_lines(tmp_path):
    path = tmp_path / "news.jsonl"
    path.write_text(record() + "\n\n\n" + record(article=5) + "\n", encoding="utf-8")

    with pytest.raises(DataError) as caught:
        load_examples(str(path))

    assert "line 4" in str(caught.value)


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (42, "number"),
        (3.5, "number"),
        (["a", "b"], "array"),
        ({"x": 1}, "object"),
        (True, "boolean"),
    ],
)
def test_jsonl_non_string_value(tmp_path, value, type_name):
    path = write_lines(tmp_path / "news.jsonl", [record(), record(), record(highlights=value)])

    with pytest.raises(DataError) as caught:
        load_examples(str(path))

    message = str(caught.value)
    assert str(path) in message
    assert "line 3" in message
    assert "'highlights'" in message
    assert type_name in message


def test_jsonl_invalid_id_type(tmp_path):
    path = write_lines(tmp_path / "news.jsonl", [record(id=["a"])])

    with pytest.raises(DataError) as caught:
        load_examples(str(path))

    message = str(caught.value)
    assert "line 1" in message
    assert "'id'" in message


def test_jsonl_non_utf8_bytes(tmp_path):
    path = tmp_path / "latin.jsonl"
    content = (record("fine") + "\n" + record("fine too") + "\n").encode("utf-8")
    bad_line = '{"article": "Caf\xe9 owners", "highlights": "x"}\n'.encode("latin-1")
    path.write_bytes(content + bad_line)
    expected_offset = len(content) + bad_line.index(b"\xe9")

    with pytest.raises(DataError) as caught:
        load_examples(str(path))

    message = str(caught.value)
    assert str(path) in message
    assert "line 3" in message
    assert f"byte offset {expected_offset}" in message
    assert "0xe9" in message
    assert "iconv -f latin1 -t utf-8" in message


def test_jsonl_utf8_bom_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + record("Zoë").encode("utf-8") + b"\n")

    examples = load_examples(str(path))

    assert examples[0].text == "Zoë"


def test_json_array_file(tmp_path):
    path = tmp_path / "news.json"
    rows = [{"article": "a1", "highlights": "h1"}, {"article": "a2", "highlights": 7}]
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")

    with pytest.raises(DataError) as caught:
        load_examples(str(path))

    message = str(caught.value)
    assert str(path) in message
    assert "item 2" in message
    assert "'highlights'" in message


def test_json_extension_reads_lines(tmp_path):
    path = write_lines(tmp_path / "news.json", [record("a"), record("b")])

    assert [example.text for example in load_examples(str(path))] == ["a", "b"]


# ---------------------------------------------------------------------------------------------
# Empty values: skip, strict, whole column empty
# ---------------------------------------------------------------------------------------------


def test_empty_rows_skipped_with_warning(tmp_path, caplog):
    path = write_lines(
        tmp_path / "news.jsonl",
        [
            record("one"),
            record("", "summary"),
            record("three", "   "),
            record(None, "summary"),
            record("five"),
        ],
    )

    with caplog.at_level(logging.WARNING, logger="sumtune.data"):
        examples, report = load_examples_with_report(str(path))

    assert [example.text for example in examples] == ["one", "five"]
    assert report.rows_read == 5
    assert report.rows_used == 2
    assert report.skipped_empty == 3
    warnings = [entry.getMessage() for entry in caplog.records if entry.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "skipped 3 of 5 rows" in warnings[0]
    assert str(path) in warnings[0]
    assert "line 2" in warnings[0]


@pytest.mark.parametrize(
    ("rows", "line", "field"),
    [
        ([record("ok"), record("", "summary")], 2, "article"),
        ([record("ok"), record("ok"), record("text", "")], 3, "highlights"),
        ([record("ok"), record("text", None)], 2, "highlights"),
    ],
)
def test_empty_rows_rejected_when_strict(tmp_path, rows, line, field):
    path = write_lines(tmp_path / "news.jsonl", rows)

    with pytest.raises(DataError) as caught:
        load_examples(str(path), strict=True)

    message = str(caught.value)
    assert str(path) in message
    assert f"line {line}" in message
    assert f"'{field}'" in message
    assert "empty" in message


def test_empty_summary_ignored_for_inference(tmp_path):
    path = write_lines(tmp_path / "news.jsonl", [record("a", ""), record("b", None)])

    examples = load_examples(str(path), summary_column=None, strict=True)

    assert [example.text for example in examples] == ["a", "b"]


def test_column_empty_in_every_row(tmp_path):
    rows = [record("a", ""), record("b", None), record("c", " ")]
    path = write_lines(tmp_path / "news.jsonl", rows)

    with pytest.raises(DataError) as caught:
        load_examples(str(path))

    message = str(caught.value)
    assert str(path) in message
    assert "'highlights'" in message
    assert "all 3 rows" in message
    assert "--summary-column" in message


def test_rows_empty_in_mixed_columns(tmp_path):
    path = write_lines(tmp_path / "news.jsonl", [record("a", ""), record("", "b")])

    with pytest.raises(DataError) as caught:
        load_examples(str(path))

    assert "none of the 2 rows" in str(caught.value)


def test_max_samples_counts_after_skipping(tmp_path):
    path = write_lines(
        tmp_path / "news.jsonl",
        [record("", "x"), record("a"), record("b", ""), record("c"), record("d"), record("e")],
    )

    examples, report = load_examples_with_report(str(path), max_samples=3)

    assert [example.text for example in examples] == ["a", "c", "d"]
    assert report.rows_read == 5
    assert report.skipped_empty == 2


@pytest.mark.parametrize("value", [0, -3, 2.5, True])
def test_max_samples_invalid(tmp_path, value):
    path = write_lines(tmp_path / "news.jsonl", [record()])

    with pytest.raises(DataError, match="max_samples"):
        load_examples(str(path), max_samples=value)


# ---------------------------------------------------------------------------------------------
# Files: not found, extension, empty
# ---------------------------------------------------------------------------------------------


def test_file_not_found(tmp_path):
    path = tmp_path / "missing.jsonl"

    with pytest.raises(DataError) as caught:
        load_examples(str(path))

    assert str(path) in str(caught.value)
    assert "not found" in str(caught.value)


def test_unknown_hub_like_name_hint():
    with pytest.raises(DataError) as caught:
        load_examples("xsum_nonexistent_name")

    assert "'cnn_dailymail'" in str(caught.value)


def test_unsupported_extension(tmp_path):
    path = tmp_path / "news.txt"
    path.write_text("hello\n", encoding="utf-8")

    with pytest.raises(DataError) as caught:
        load_examples(str(path))

    message = str(caught.value)
    assert str(path) in message
    assert "'.txt'" in message
    for extension in (".jsonl", ".json", ".csv", ".parquet"):
        assert extension in message


@pytest.mark.parametrize(
    ("name", "content"),
    [("empty.jsonl", b""), ("blank.jsonl", b"\n  \n\n"), ("empty.csv", b""), ("empty.json", b"")],
)
def test_empty_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)

    with pytest.raises(DataError) as caught:
        load_examples(str(path))

    assert str(path) in str(caught.value)
    assert "empty" in str(caught.value)


def test_csv_header_only(tmp_path):
    path = tmp_path / "news.csv"
    path.write_text("id,article,highlights\n", encoding="utf-8")

    with pytest.raises(DataError) as caught:
        load_examples(str(path))

    assert str(path) in str(caught.value)
    assert "empty" in str(caught.value)


def test_unknown_split_name(tmp_path):
    path = write_lines(tmp_path / "news.jsonl", [record()])

    with pytest.raises(DataError) as caught:
        load_examples(str(path), "tset")

    assert "'tset'" in str(caught.value)
    assert "train, validation, test" in str(caught.value)


# ---------------------------------------------------------------------------------------------
# CSV and Parquet
# ---------------------------------------------------------------------------------------------


def write_csv(path: Path, rows: list[dict], fieldnames=("id", "article", "highlights")) -> Path:
    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(fieldnames))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_csv_round_trip_real_rows(tmp_path, real_rows):
    path = write_csv(tmp_path / "news.csv", real_rows)
    # Real highlights contain line breaks, so the file must have multi-line quoted fields.
    assert len(path.read_text(encoding="utf-8").splitlines()) > len(real_rows) + 1

    examples = load_examples(str(path), "train")

    assert [example.id for example in examples] == [row["id"] for row in real_rows]
    assert [example.text for example in examples] == [row["article"] for row in real_rows]
    assert [example.summary for example in examples] == [row["highlights"] for row in real_rows]


def test_csv_line_numbers_after_multiline_fields(tmp_path):
    rows = [
        {"id": "a", "article": "first\nsecond\nthird", "highlights": "one\ntwo"},
        {"id": "b", "article": "plain", "highlights": "plain"},
        {"id": "c", "article": "text", "highlights": ""},
    ]
    path = write_csv(tmp_path / "news.csv", rows)
    text = path.read_text(encoding="utf-8")
    # Independent reference: the physical line on which row "c" starts.
    expected_line = text[: text.index("\nc,")].count("\n") + 2

    with pytest.raises(DataError) as caught:
        load_examples(str(path), strict=True)

    message = str(caught.value)
    assert expected_line == 7
    assert f"line {expected_line}" in message
    assert "'highlights'" in message
    assert str(path) in message


def test_csv_missing_column(tmp_path):
    path = write_csv(
        tmp_path / "news.csv",
        [{"id": "a", "Article": "x", "highlights": "y"}],
        fieldnames=("id", "Article", "highlights"),
    )

    with pytest.raises(DataError) as caught:
        load_examples(str(path))

    message = str(caught.value)
    assert str(path) in message
    assert "'article'" in message
    assert "id, Article, highlights" in message
    assert "--text-column Article" in message


def test_csv_wrong_field_count(tmp_path):
    path = tmp_path / "news.csv"
    path.write_text("article,highlights\nfine,fine\nan, unquoted, comma\n", encoding="utf-8")

    with pytest.raises(DataError) as caught:
        load_examples(str(path))

    message = str(caught.value)
    assert str(path) in message
    assert "line 3" in message
    assert "expected 2 fields" in message


def test_csv_non_utf8_bytes(tmp_path):
    path = tmp_path / "latin.csv"
    head = "article,highlights\nfine,fine\n".encode("utf-8")
    path.write_bytes(head + "na\xefve,summary\n".encode("latin-1"))

    with pytest.raises(DataError) as caught:
        load_examples(str(path))

    message = str(caught.value)
    assert str(path) in message
    assert "line 3" in message
    assert f"byte offset {len(head) + 2}" in message
    assert "iconv" in message


def test_csv_long_field(tmp_path):
    article = "word " * 40_000  # 200,000 characters, above the csv module's default field limit
    path = write_csv(tmp_path / "long.csv", [{"id": "x", "article": article, "highlights": "s"}])

    examples = load_examples(str(path))

    assert examples[0].text == article
    assert csv.field_size_limit() == 131072


def test_parquet_round_trip_real_rows(tmp_path, real_rows):
    import pyarrow
    import pyarrow.parquet as parquet

    path = tmp_path / "news.parquet"
    parquet.write_table(pyarrow.Table.from_pylist(real_rows), path)

    examples = load_examples(str(path), "validation", max_samples=4)

    assert [example.id for example in examples] == [row["id"] for row in real_rows[:4]]
    assert [example.text for example in examples] == [row["article"] for row in real_rows[:4]]
    assert [example.summary for example in examples] == [row["highlights"] for row in real_rows[:4]]


def test_parquet_missing_column(tmp_path):
    import pyarrow
    import pyarrow.parquet as parquet

    path = tmp_path / "news.parquet"
    parquet.write_table(pyarrow.table({"article": ["a"], "summary": ["s"]}), path)

    with pytest.raises(DataError) as caught:
        load_examples(str(path))

    message = str(caught.value)
    assert str(path) in message
    assert "'highlights'" in message
    assert "article, summary" in message
    assert "--summary-column NAME" in message


def test_parquet_non_string_column(tmp_path):
    import pyarrow
    import pyarrow.parquet as parquet

    path = tmp_path / "news.parquet"
    parquet.write_table(pyarrow.table({"article": ["a", "b"], "highlights": [None, 5]}), path)

    with pytest.raises(DataError) as caught:
        load_examples(str(path))

    message = str(caught.value)
    assert str(path) in message
    assert "row 2" in message
    assert "'highlights'" in message


def test_parquet_empty_and_invalid(tmp_path):
    import pyarrow
    import pyarrow.parquet as parquet

    empty = tmp_path / "empty.parquet"
    schema = pyarrow.schema([("article", pyarrow.string()), ("highlights", pyarrow.string())])
    parquet.write_table(schema.empty_table(), empty)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not a parquet file at all")

    with pytest.raises(DataError) as empty_error:
        load_examples(str(empty))
    with pytest.raises(DataError) as broken_error:
        load_examples(str(broken))

    assert str(empty) in str(empty_error.value)
    assert "empty" in str(empty_error.value)
    assert str(broken) in str(broken_error.value)
    assert "not a valid Parquet file" in str(broken_error.value)


# ---------------------------------------------------------------------------------------------
# One file per split: directory and mapping string
# ---------------------------------------------------------------------------------------------


def make_split_directory(directory: Path, rows: list[dict]) -> Path:
    import pyarrow
    import pyarrow.parquet as parquet

    directory.mkdir()
    write_lines(directory / "train.jsonl", [json.dumps(row) for row in rows[:3]])
    write_csv(directory / "val.csv", rows[3:5])
    parquet.write_table(pyarrow.Table.from_pylist(rows[5:]), directory / "test.parquet")
    (directory / "README.md").write_text("not data\n", encoding="utf-8")
    return directory


def test_directory_of_split_files(tmp_path, real_rows):
    directory = make_split_directory(tmp_path / "splits", real_rows)

    assert available_splits(str(directory)) == ["train", "validation", "test"]
    assert not is_single_file(str(directory))
    expected_rows = {"train": real_rows[:3], "dev": real_rows[3:5], "test": real_rows[5:]}
    for split, expected in expected_rows.items():
        examples = load_examples(str(directory), split)
        assert [example.id for example in examples] == [row["id"] for row in expected]
        assert [example.summary for example in examples] == [row["highlights"] for row in expected]


def test_directory_missing_split(tmp_path):
    directory = tmp_path / "splits"
    directory.mkdir()
    write_lines(directory / "train.jsonl", [record()])
    write_lines(directory / "dev.jsonl", [record()])

    with pytest.raises(DataError) as caught:
        load_examples(str(directory), "test")

    message = str(caught.value)
    assert str(directory) in message
    assert "'test'" in message
    assert "train, validation" in message
    assert available_splits(str(directory)) == ["train", "validation"]


def test_directory_ambiguous_and_empty(tmp_path):
    ambiguous = tmp_path / "ambiguous"
    ambiguous.mkdir()
    write_lines(ambiguous / "train.jsonl", [record()])
    write_csv(ambiguous / "train.csv", [])
    empty = tmp_path / "nothing"
    empty.mkdir()

    with pytest.raises(DataError) as ambiguous_error:
        load_examples(str(ambiguous), "train")
    with pytest.raises(DataError) as empty_error:
        load_examples(str(empty), "train")

    assert "train.csv, train.jsonl" in str(ambiguous_error.value)
    assert str(empty) in str(empty_error.value)
    assert "train.jsonl" in str(empty_error.value)


def test_mapping_string(tmp_path, real_rows):
    train = write_lines(tmp_path / "a.jsonl", [json.dumps(row) for row in real_rows[:4]])
    validation = write_csv(tmp_path / "b.csv", real_rows[4:])
    mapping = f"train={train}, val={validation}"

    assert available_splits(mapping) == ["train", "validation"]
    assert not is_single_file(mapping)
    assert [e.id for e in load_examples(mapping, "train")] == [r["id"] for r in real_rows[:4]]
    assert [e.id for e in load_examples(mapping, "validation")] == [r["id"] for r in real_rows[4:]]
    with pytest.raises(DataError) as caught:
        load_examples(mapping, "test")
    assert "'test'" in str(caught.value)
    assert "train, validation" in str(caught.value)


@pytest.mark.parametrize(
    ("mapping", "expected"),
    [
        ("train=a.jsonl,holdout=b.jsonl", "unknown split 'holdout'"),
        ("train=a.jsonl,train=a.jsonl", "appears twice"),
        ("train=,test=a.jsonl", "expected SPLIT=FILE"),
        ("train=a.jsonl,test=missing.jsonl", "missing.jsonl"),
    ],
)
def test_mapping_string_invalid(tmp_path, monkeypatch, mapping, expected):
    monkeypatch.chdir(tmp_path)
    write_lines(tmp_path / "a.jsonl", [record()])

    with pytest.raises(DataError) as caught:
        load_examples(mapping, "train")

    assert expected in str(caught.value)


def test_single_file_serves_every_split(tmp_path):
    path = write_lines(tmp_path / "news.jsonl", [record("a"), record("b")])

    assert available_splits(str(path)) == ["train", "validation", "test"]
    assert is_single_file(str(path))
    assert load_examples(str(path), "train") == load_examples(str(path), "test")


# ---------------------------------------------------------------------------------------------
# Hugging Face cnn_dailymail (load_dataset patched: no hub access in tests)
# ---------------------------------------------------------------------------------------------


def test_cnn_dailymail_uses_load_dataset(monkeypatch):
    import datasets

    calls = []
    table = {
        "article": ["First story.", "", "Third story."],
        "highlights": ["First.", "Second.", "Third."],
        "id": ["a1", "b2", "c3"],
    }

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return datasets.Dataset.from_dict(table)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)

    examples, report = load_examples_with_report("cnn_dailymail", "val")

    assert calls == [(("cnn_dailymail", "3.0.0"), {"split": "validation"})]
    assert examples == [
        Example("First story.", "First.", "a1"),
        Example("Third story.", "Third.", "c3"),
    ]
    assert report.split == "validation"
    assert report.rows_read == 3
    assert report.skipped_empty == 1
    assert "cnn_dailymail" in report.source
    assert available_splits("cnn_dailymail") == ["train", "validation", "test"]
    assert not is_single_file("cnn_dailymail")


def test_cnn_dailymail_falls_back_to_repository(monkeypatch):
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    calls = []

    def fake_load_dataset(name, config, split):
        calls.append(name)
        if name == "cnn_dailymail":
            raise DatasetNotFoundError("Dataset 'cnn_dailymail' doesn't exist on the Hub")
        return datasets.Dataset.from_dict({"article": ["a"], "highlights": ["h"], "id": ["x"]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)

    examples = load_examples("cnn_dailymail", "test")

    assert calls == ["cnn_dailymail", "abisee/cnn_dailymail"]
    assert examples == [Example("a", "h", "x")]


def test_cnn_dailymail_missing_column(monkeypatch):
    import datasets

    monkeypatch.setattr(
        datasets,
        "load_dataset",
        lambda *args, **kwargs: datasets.Dataset.from_dict({"article": ["a"], "id": ["x"]}),
    )

    with pytest.raises(DataError) as caught:
        load_examples("cnn_dailymail", "test")

    assert "'highlights'" in str(caught.value)
    assert "--summary-column" in str(caught.value)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            ConnectionError("Couldn't reach 'cnn_dailymail' on the Hub"),
            "could not reach the Hugging Face hub",
        ),
        (OSError("disk quota exceeded"), "failed to load cnn_dailymail"),
    ],
)
def test_cnn_dailymail_hub_unreachable(monkeypatch, error, expected):
    import datasets

    def failing_load_dataset(*args, **kwargs):
        raise error

    monkeypatch.setattr(datasets, "load_dataset", failing_load_dataset)

    with pytest.raises(DataError) as caught:
        load_examples("cnn_dailymail", "train")

    message = str(caught.value)
    assert expected in message
    assert str(error) in message
    assert "--data FILE.jsonl" in message


# ---------------------------------------------------------------------------------------------
# read_jsonl_records
# ---------------------------------------------------------------------------------------------


def test_read_jsonl_records_line_numbers(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text('{"text": "a"}\n\n{"text": "b", "extra": 1}\n', encoding="utf-8")

    records = read_jsonl_records(str(path), required_fields=["text"])

    assert records == [(1, {"text": "a"}), (3, {"text": "b", "extra": 1})]


def test_read_jsonl_records_from_stdin(monkeypatch):
    payload = '{"text": "Zoë"}\n{"text": "b"}\n'.encode("utf-8")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(payload), encoding="utf-8"))

    records = read_jsonl_records("-", required_fields=["text"])

    assert records == [(1, {"text": "Zoë"}), (2, {"text": "b"})]


def test_read_jsonl_records_from_text_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"text": "x"}\n'))

    assert read_jsonl_records("-", required_fields=["text"]) == [(1, {"text": "x"})]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            ['{"prediction": "p", "reference": "r"}', '{"prediction": "p"}'],
            ["line 2", "'reference'"],
        ),
        (['{"prediction": null, "reference": "r"}'], ["line 1", "'prediction'", "null"]),
        (['{"prediction": "p", "reference": "r"}', "{oops"], ["line 2", "invalid JSON", "{oops"]),
    ],
)
def test_read_jsonl_records_errors(tmp_path, lines, expected):
    path = write_lines(tmp_path / "scores.jsonl", lines)

    with pytest.raises(DataError) as caught:
        read_jsonl_records(str(path), required_fields=["prediction", "reference"])

    message = str(caught.value)
    assert str(path) in message
    for part in expected:
        assert part in message


def test_read_jsonl_records_empty_and_missing(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")

    with pytest.raises(DataError, match="empty"):
        read_jsonl_records(str(empty), required_fields=[])
    with pytest.raises(DataError, match="not found"):
        read_jsonl_records(str(tmp_path / "absent.jsonl"), required_fields=[])


# ---------------------------------------------------------------------------------------------
# write_jsonl
# ---------------------------------------------------------------------------------------------


def test_write_jsonl_round_trip_unicode(tmp_path):
    path = tmp_path / "out" / "predictions.jsonl"
    records = [
        {"id": "1", "summary": "Zoë met Łukasz in Zürich — 東京"},
        {"id": "2", "n": [1, 2.5]},
    ]

    write_jsonl(path, records)

    raw = path.read_bytes()
    assert "Zoë met Łukasz in Zürich — 東京".encode("utf-8") in raw
    assert b"\\u" not in raw
    assert [json.loads(line) for line in raw.decode("utf-8").splitlines()] == records
    assert sorted(os.listdir(path.parent)) == ["predictions.jsonl"]


def test_write_jsonl_failure_keeps_old_file(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text('{"old": true}\n', encoding="utf-8")

    def records():
        yield {"id": "1"}
        raise RuntimeError("generation failed")

    with pytest.raises(RuntimeError, match="generation failed"):
        write_jsonl(path, records())

    assert path.read_text(encoding="utf-8") == '{"old": true}\n'
    assert sorted(os.listdir(tmp_path)) == ["predictions.jsonl"]


def test_write_jsonl_permissions_follow_umask(tmp_path):
    reference = tmp_path / "reference.txt"
    reference.write_text("x", encoding="utf-8")
    path = tmp_path / "predictions.jsonl"

    write_jsonl(path, [{"a": 1}])

    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(reference.stat().st_mode)


def test_write_jsonl_read_back_as_dataset(tmp_path):
    path = tmp_path / "data.jsonl"
    write_jsonl(path, [{"article": "text ü", "highlights": "sum", "id": "z"}])

    assert load_examples(str(path)) == [Example("text ü", "sum", "z")]


def test_write_jsonl_to_stdout(capsys):
    write_jsonl("-", [{"a": "é"}])

    assert capsys.readouterr().out == '{"a": "é"}\n'


# ---------------------------------------------------------------------------------------------
# split_train_validation
# ---------------------------------------------------------------------------------------------


def make_examples(count: int) -> list[Example]:
    return [Example(text=f"article {i}", summary=f"summary {i}", id=str(i)) for i in range(count)]


@pytest.mark.parametrize(("size", "expected_count"), [(3, 3), (0.25, 5), (0.01, 1)])
def test_split_sizes_and_partition(size, expected_count):
    examples = make_examples(20)

    train, validation = split_train_validation(examples, size, seed=1)

    assert len(validation) == expected_count
    assert len(train) == 20 - expected_count
    assert sorted(train + validation, key=lambda e: int(e.id)) == examples
    assert set(e.id for e in train).isdisjoint(e.id for e in validation)
    assert [int(e.id) for e in validation] == sorted(int(e.id) for e in validation)
    assert [int(e.id) for e in train] == sorted(int(e.id) for e in train)


def test_split_deterministic_by_seed():
    examples = make_examples(50)

    first = split_train_validation(examples, 10, seed=7)
    again = split_train_validation(examples, 10, seed=7)
    other = split_train_validation(examples, 10, seed=8)

    assert first == again
    assert first[1] != other[1]


@pytest.mark.parametrize("size", [0, -1, 0.0, 1.0, 1.5, 10, 12, True, "3"])
def test_split_invalid_sizes(size):
    with pytest.raises(DataError):
        split_train_validation(make_examples(10), size, seed=0)

"""Loading and validation of summarization data: article/summary pairs for training and evaluation.

A data source is one of:

* ``cnn_dailymail``: the Hugging Face dataset ``cnn_dailymail`` (config ``3.0.0``, splits train,
  validation and test, fields ``article``, ``highlights`` and ``id``), downloaded through
  ``datasets.load_dataset``. The exact name always means the hub; write ``./cnn_dailymail`` to load
  a local directory of that name.
* A single local file: ``.jsonl`` or ``.json`` with one JSON object per line, ``.csv`` with a
  header line, or ``.parquet``. A ``.json`` file may also contain one array of objects. The same
  rows serve every requested split, so callers that need a held-out set must check
  :func:`is_single_file` and use :func:`split_train_validation`.
* One file per split: a directory containing ``train.*``, ``validation.*`` (or ``val.*``/``dev.*``)
  and ``test.*``, or a mapping string such as ``train=a.jsonl,validation=b.jsonl,test=c.csv``.

Every problem with the data raises :class:`sumtune.errors.DataError` with a message that names the
file, the line (or row) and the field, and suggests a fix. Rows with an empty article or summary
are skipped with a warning, or rejected when ``strict=True``.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import io
import json
import logging
import os
import random
import secrets
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sumtune.errors import DataError

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
# Other names accepted for a split, both as the requested split and as a file stem in a directory.
SPLIT_ALIASES = {"val": "validation", "dev": "validation"}
SUPPORTED_EXTENSIONS = (".jsonl", ".json", ".csv", ".parquet")
HUB_DATASET = "cnn_dailymail"
HUB_CONFIG = "3.0.0"
# Hub repository of the dataset, tried when the bare name HUB_DATASET is not found.
HUB_REPOSITORY = "abisee/cnn_dailymail"
# Characters of a malformed line quoted in the error message.
LINE_PREVIEW_CHARS = 80
UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Example:
    """One article with its reference summary (None when only inference is needed)."""

    text: str
    summary: str | None
    id: str | None = None


@dataclass
class LoadReport:
    """Counts of what one load read from a source, for logs."""

    source: str
    split: str
    rows_read: int
    rows_used: int
    skipped_empty: int


@dataclass
class _Table:
    """Rows of one data source before validation.

    ``columns`` is None when each row may have its own fields (JSON lines), so the column check
    happens row by row. ``unit`` is the word used to number rows in messages ("line", "row",
    "item"), and ``rows`` yields (number, fields) in source order.
    """

    name: str
    unit: str
    columns: list[str] | None
    rows: Iterator[tuple[int, dict[str, Any]]]


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def load_examples(
    source: str,
    split: str = "test",
    *,
    text_column: str = "article",
    summary_column: str | None = "highlights",
    id_column: str | None = "id",
    max_samples: int | None = None,
    strict: bool = False,
    seed: int = 0,
) -> list[Example]:
    """Load and validate the examples of one split; see :func:`load_examples_with_report`."""
    examples, _ = load_examples_with_report(
        source,
        split,
        text_column=text_column,
        summary_column=summary_column,
        id_column=id_column,
        max_samples=max_samples,
        strict=strict,
        seed=seed,
    )
    return examples


def load_examples_with_report(
    source: str,
    split: str = "test",
    *,
    text_column: str = "article",
    summary_column: str | None = "highlights",
    id_column: str | None = "id",
    max_samples: int | None = None,
    strict: bool = False,
    seed: int = 0,
) -> tuple[list[Example], LoadReport]:
    """Load and validate the examples of one split, and report how many rows were read and used.

    ``summary_column=None`` loads articles only (inference), and every ``Example.summary`` is None.
    ``id_column`` is optional in the data: rows without it get ``id=None``, and integer ids are
    converted to strings.

    Rows whose article or summary is empty (null or only whitespace) are skipped and counted, or
    raise DataError when ``strict`` is true. A column that is empty in every row always raises.
    ``max_samples`` keeps the first N usable rows in source order, after empty rows are dropped,
    and reading stops there, so later rows are not validated.

    ``seed`` does not change the result: rows are always taken in source order. It is accepted so
    that callers can pass one seed to every data function.
    """
    del seed  # Accepted for a uniform signature; row order never depends on it.
    _check_max_samples(max_samples)
    split = normalize_split(split)
    for flag, column in (("--text-column", text_column), ("--summary-column", summary_column)):
        if column is not None and (not isinstance(column, str) or not column.strip()):
            raise DataError(f"invalid column name {column!r}: pass a non-empty name with {flag}")

    if _is_hub_source(source):
        table = _read_hub_split(split, text_column, summary_column, id_column)
    else:
        path = _resolve_split_file(source, split)
        table = _read_table(path)

    examples, rows_read, skipped = _build_examples(
        table,
        text_column=text_column,
        summary_column=summary_column,
        id_column=id_column,
        max_samples=max_samples,
        strict=strict,
    )
    report = LoadReport(
        source=table.name,
        split=split,
        rows_read=rows_read,
        rows_used=len(examples),
        skipped_empty=skipped,
    )
    logger.info(
        "loaded %d examples from %s (split %s, %d rows read, %d skipped as empty)",
        report.rows_used,
        report.source,
        report.split,
        report.rows_read,
        report.skipped_empty,
    )
    return examples, report


def available_splits(source: str) -> list[str]:
    """Return the splits that ``source`` can serve, in the order train, validation, test.

    A single file serves every split with the same rows, so this returns all three for it; use
    :func:`is_single_file` to tell that case apart before holding out validation rows.
    """
    if _is_hub_source(source):
        return list(SPLITS)
    if _is_mapping_string(source):
        return [split for split in SPLITS if split in _parse_split_mapping(source)]
    path = Path(source)
    if path.is_dir():
        return [split for split in SPLITS if split in _find_split_files(path)]
    _check_data_file(path)
    return list(SPLITS)


def is_single_file(source: str) -> bool:
    """Return whether ``source`` is one local file whose rows serve every split."""
    if _is_hub_source(source) or _is_mapping_string(source):
        return False
    return not Path(source).is_dir()


def normalize_split(split: str) -> str:
    """Return the canonical name of ``split`` ("val" and "dev" mean "validation")."""
    name = SPLIT_ALIASES.get(split, split)
    if name not in SPLITS:
        raise DataError(
            f"unknown split {split!r}: expected one of {', '.join(SPLITS)} "
            f"(or {', '.join(SPLIT_ALIASES)} for validation)"
        )
    return name


def split_train_validation(
    examples: Sequence[Example], validation_size: int | float, seed: int = 0
) -> tuple[list[Example], list[Example]]:
    """Hold out a random, seed-determined subset of ``examples`` for validation.

    An int ``validation_size`` is a number of examples, a float in (0, 1) a fraction of them
    (rounded, at least one). Both parts keep the input order, and at least one example stays in
    training. The same examples, size and seed always give the same split.
    """
    total = len(examples)
    if isinstance(validation_size, bool) or not isinstance(validation_size, int | float):
        raise DataError(
            f"invalid validation size {validation_size!r}: expected a number of examples "
            "or a fraction between 0 and 1"
        )
    if isinstance(validation_size, float):
        if not 0.0 < validation_size < 1.0:
            raise DataError(
                f"invalid validation fraction {validation_size}: expected a value between 0 and 1 "
                "(exclusive), or an integer number of examples"
            )
        count = max(1, round(total * validation_size))
    else:
        if validation_size <= 0:
            raise DataError(
                f"invalid validation size {validation_size}: expected at least 1 example"
            )
        count = validation_size
    if count >= total:
        raise DataError(
            f"cannot hold out {count} validation examples from {total}: at least one example must "
            "remain for training; lower the validation size or provide a separate validation file"
        )

    held_out = set(random.Random(seed).sample(range(total), count))
    train = [example for index, example in enumerate(examples) if index not in held_out]
    validation = [example for index, example in enumerate(examples) if index in held_out]
    return train, validation


def read_jsonl_records(
    path_or_dash: str | os.PathLike[str], *, required_fields: Sequence[str]
) -> list[tuple[int, dict[str, Any]]]:
    """Read a JSON-lines file ("-" reads standard input) as (line number, record) pairs.

    Blank lines are skipped but still counted, so line numbers match the file. Every record must be
    a JSON object that contains each of ``required_fields`` with a non-null value; the values are
    not otherwise checked. An input without records raises DataError.
    """
    if str(path_or_dash) == "-":
        name = "standard input"
        stream = getattr(sys.stdin, "buffer", None)
        if stream is None:
            # A text stream without a byte buffer (as in tests) is already decoded.
            stream = io.BytesIO(sys.stdin.read().encode("utf-8"))
        records = list(_parse_json_lines(stream, name))
    else:
        path = Path(path_or_dash)
        _check_file_exists(path)
        name = str(path)
        with path.open("rb") as stream:
            records = list(_parse_json_lines(stream, name))

    if not records:
        raise DataError(f"{name} is empty: expected one JSON object per line")
    for line_number, record in records:
        for field in required_fields:
            if field not in record:
                raise DataError(
                    f"{name} line {line_number}: missing field {field!r} "
                    f"(fields present: {_format_names(record)}); "
                    f"every record needs {_format_names(required_fields)}"
                )
            if record[field] is None:
                raise DataError(
                    f"{name} line {line_number}: field {field!r} is null; give it a value "
                    "or remove the record"
                )
    return records


def write_jsonl(path: str | os.PathLike[str], records: Iterable[dict[str, Any]]) -> None:
    """Write ``records`` as UTF-8 JSON lines, replacing ``path`` atomically ("-" writes stdout).

    The records go to a temporary file in the same directory, which is synced and then renamed
    over ``path`` with ``os.replace``, so readers see either the old file or the complete new one.
    If writing fails, the temporary file is removed and ``path`` is left unchanged. Missing parent
    directories are created. Non-ASCII characters are written as-is, not as ``\\u`` escapes.
    """
    if str(path) == "-":
        for record in records:
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        sys.stdout.flush()
        return

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open with mode 0o666 lets the umask set the permissions, as open() does for a new file.
    # tempfile.mkstemp would create the file readable by the owner only.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="\n") as stream:
            for record in records:
                stream.write(json.dumps(record, ensure_ascii=False) + "\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------
# Resolving a source string to a file
# ---------------------------------------------------------------------------------------------


def _is_hub_source(source: str) -> bool:
    return str(source).strip() == HUB_DATASET


def _is_mapping_string(source: str) -> bool:
    # An existing path wins, because file names may legally contain "=".
    return "=" in str(source) and not Path(source).exists()


def _resolve_split_file(source: str, split: str) -> Path:
    if _is_mapping_string(source):
        files = _parse_split_mapping(source)
        described = f"the split mapping {source!r}"
    else:
        path = Path(source)
        if not path.is_dir():
            _check_data_file(path)
            return path
        files = _find_split_files(path)
        described = f"directory {path}"
    if split not in files:
        present = ", ".join(files) if files else "none"
        raise DataError(
            f"split {split!r} not found in {described} (splits present: {present}); "
            f"request one of those splits or add a {split} file"
        )
    return files[split]


def _parse_split_mapping(source: str) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for entry in str(source).split(","):
        if not entry.strip():
            continue
        key, separator, value = entry.partition("=")
        key, value = key.strip(), value.strip()
        if not separator or not key or not value:
            raise DataError(
                f"invalid entry {entry.strip()!r} in split mapping {source!r}: expected "
                "SPLIT=FILE, for example train=train.jsonl,validation=val.jsonl,test=test.csv"
            )
        if SPLIT_ALIASES.get(key, key) not in SPLITS:
            raise DataError(
                f"unknown split {key!r} in split mapping {source!r}: expected one of "
                f"{', '.join(SPLITS)} (or {', '.join(SPLIT_ALIASES)} for validation)"
            )
        split = SPLIT_ALIASES.get(key, key)
        if split in files:
            raise DataError(f"split {split!r} appears twice in split mapping {source!r}")
        path = Path(value)
        _check_data_file(path)
        files[split] = path
    if not files:
        raise DataError(f"split mapping {source!r} names no files")
    return {split: files[split] for split in SPLITS if split in files}


def _find_split_files(directory: Path) -> dict[str, Path]:
    candidates: dict[str, list[Path]] = {}
    for child in sorted(directory.iterdir()):
        if not child.is_file() or child.suffix.lower() not in SUPPORTED_EXTENSIONS:
            continue
        split = SPLIT_ALIASES.get(child.stem.lower(), child.stem.lower())
        if split in SPLITS:
            candidates.setdefault(split, []).append(child)
    for split, paths in candidates.items():
        if len(paths) > 1:
            names = ", ".join(path.name for path in paths)
            raise DataError(
                f"directory {directory} has {len(paths)} files for split {split!r} ({names}); "
                "keep exactly one"
            )
    if not candidates:
        extensions = "/".join(SUPPORTED_EXTENSIONS)
        raise DataError(
            f"directory {directory} contains no split files: expected train, validation "
            f"(or val/dev) and test files with extension {extensions}, e.g. train.jsonl"
        )
    return {split: candidates[split][0] for split in SPLITS if split in candidates}


def _check_file_exists(path: Path) -> None:
    if not path.exists():
        raise DataError(f"data file not found: {path}; check the path")
    if path.is_dir():
        raise DataError(f"{path} is a directory, but a data file was expected")


def _check_data_file(path: Path) -> None:
    if not path.exists():
        hint = ""
        if path.suffix == "" and os.sep not in str(path):
            hint = f" (only {HUB_DATASET!r} is loaded from the Hugging Face hub)"
        raise DataError(f"data file not found: {path}{hint}; check the path")
    _check_file_exists(path)
    if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
        raise DataError(
            f"unsupported data file extension {path.suffix or '(none)'!r} for {path}: "
            f"expected one of {', '.join(SUPPORTED_EXTENSIONS)}"
        )


# ---------------------------------------------------------------------------------------------
# Readers: each returns a _Table whose rows are not validated yet
# ---------------------------------------------------------------------------------------------


def _read_table(path: Path) -> _Table:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path)
    if suffix == ".parquet":
        return _read_parquet(path)
    return _read_json(path)


def _read_json(path: Path) -> _Table:
    with path.open("rb") as stream:
        start = stream.read(4096).lstrip(UTF8_BOM).lstrip()
    # A .json file may also hold one JSON array of objects, as written by pandas and others.
    if path.suffix.lower() == ".json" and start.startswith(b"["):
        return _Table(str(path), "item", None, _read_json_array(path))
    return _Table(str(path), "line", None, _iterate_json_lines_file(path))


def _iterate_json_lines_file(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open("rb") as stream:
        yield from _parse_json_lines(stream, str(path))


def _parse_json_lines(stream: io.BufferedIOBase, name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line of a binary JSON-lines stream."""
    offset = 0
    for line_number, raw in enumerate(stream, start=1):
        line_offset = offset
        offset += len(raw)
        if line_number == 1 and raw.startswith(UTF8_BOM):
            raw = raw[len(UTF8_BOM) :]
            line_offset += len(UTF8_BOM)
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            file_offset = line_offset + error.start
            raise _utf8_error(name, line_number, file_offset, error.start, raw) from None
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            preview = line.strip()[:LINE_PREVIEW_CHARS]
            raise DataError(
                f"{name} line {line_number}: invalid JSON ({error.msg} at column {error.colno}); "
                f"the line starts with {preview!r}. Each non-blank line must be one JSON object"
            ) from None
        if not isinstance(record, dict):
            raise DataError(
                f"{name} line {line_number}: expected a JSON object, got {_json_type(record)}; "
                'each line must look like {"article": "...", "highlights": "..."}'
            )
        yield line_number, record


def _read_json_array(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    data = path.read_bytes()
    text = _decode_utf8(data, str(path))
    try:
        items = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(
            f"{path} line {error.lineno}: invalid JSON ({error.msg} at column {error.colno})"
        ) from None
    if not isinstance(items, list):
        raise DataError(f"{path}: expected a JSON array of objects or one JSON object per line")
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise DataError(
                f"{path} item {number}: expected a JSON object, got {_json_type(item)}"
            )
        yield number, item


def _read_csv(path: Path) -> _Table:
    text = _decode_utf8(path.read_bytes(), str(path))
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    try:
        for row in reader:
            if row:
                header = row
                break
    except csv.Error as error:
        raise DataError(f"{path} line {reader.line_num}: invalid CSV ({error})") from None
    if header is None:
        raise DataError(f"{path} is empty: expected a header line naming the columns")
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise DataError(
            f"{path} line {reader.line_num}: the header names column(s) "
            f"{_format_names(duplicates)} more than once; rename them so that each name is unique"
        )
    rows = _parse_csv_rows(path, reader, header)
    return _Table(str(path), "line", list(header), (row for row in rows))


def _parse_csv_rows(path: Path, reader: Any, header: list[str]) -> list[tuple[int, dict[str, Any]]]:
    # The rows are parsed eagerly because the field size limit is process-wide state that must be
    # restored before control leaves this function. Articles can exceed the default limit of
    # 131072 characters.
    rows: list[tuple[int, dict[str, Any]]] = []
    previous_limit = csv.field_size_limit(2**31 - 1)
    try:
        while True:
            # A quoted field may span several physical lines; the row starts after the last one.
            start_line = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as error:
                raise DataError(f"{path} line {start_line}: invalid CSV ({error})") from None
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(
                    f"{path} line {start_line}: expected {len(header)} fields as in the header, "
                    f"found {len(row)}; quote values that contain commas or line breaks"
                )
            rows.append((start_line, dict(zip(header, row, strict=True))))
    finally:
        csv.field_size_limit(previous_limit)
    return rows


def _read_parquet(path: Path) -> _Table:
    import pyarrow
    import pyarrow.parquet as parquet

    try:
        parquet_file = parquet.ParquetFile(path)
    except (pyarrow.ArrowInvalid, OSError) as error:
        raise DataError(f"{path} is not a valid Parquet file ({error})") from None
    columns = list(parquet_file.schema_arrow.names)
    if parquet_file.metadata.num_rows == 0:
        raise DataError(f"{path} is empty: the Parquet file has no rows")
    return _Table(str(path), "row", columns, _iterate_parquet_rows(parquet_file))


def _iterate_parquet_rows(parquet_file: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    number = 0
    for batch in parquet_file.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            number += 1
            yield number, row


def _read_hub_split(
    split: str, text_column: str, summary_column: str | None, id_column: str | None
) -> _Table:
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    name = f"{HUB_DATASET} {HUB_CONFIG} (Hugging Face hub) split {split}"
    local_hint = (
        "pass a local file instead with --data FILE.jsonl (one JSON object per line with "
        '"article" and "highlights" fields), or a directory with train/validation/test files'
    )
    # NOTE: the tests patch datasets.load_dataset, so neither call below has run against the
    # real hub. The hub lists this dataset under HUB_REPOSITORY, which is tried when the bare
    # name is not found.
    try:
        try:
            dataset = datasets.load_dataset(HUB_DATASET, HUB_CONFIG, split=split)
        except DatasetNotFoundError:
            logger.info("%s not found on the hub, trying %s", HUB_DATASET, HUB_REPOSITORY)
            dataset = datasets.load_dataset(HUB_REPOSITORY, HUB_CONFIG, split=split)
    except ConnectionError as error:
        raise DataError(
            f"could not reach the Hugging Face hub to download {HUB_DATASET} {HUB_CONFIG} "
            f"({type(error).__name__}: {error}); check the network connection, or {local_hint}"
        ) from None
    except OSError as error:
        raise DataError(
            f"failed to load {HUB_DATASET} {HUB_CONFIG} split {split} from the Hugging Face hub "
            f"({type(error).__name__}: {error}); {local_hint}"
        ) from None

    columns = list(dataset.column_names)
    selected = [
        column
        for column in (text_column, summary_column, id_column)
        if column is not None and column in columns
    ]
    return _Table(name, "row", columns, _iterate_dataset_rows(dataset.select_columns(selected)))


def _iterate_dataset_rows(dataset: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    for index, row in enumerate(dataset, start=1):
        yield index, row


def _decode_utf8(data: bytes, name: str) -> str:
    """Decode a whole file, pointing a UTF-8 error to its line and byte offset."""
    start = len(UTF8_BOM) if data.startswith(UTF8_BOM) else 0
    try:
        return data[start:].decode("utf-8")
    except UnicodeDecodeError as error:
        offset = start + error.start
        line_start = data.rfind(b"\n", 0, offset) + 1
        line_end = data.find(b"\n", offset)
        line = data[line_start : line_end if line_end >= 0 else len(data)]
        line_number = data.count(b"\n", 0, offset) + 1
        raise _utf8_error(name, line_number, offset, offset - line_start, line) from None


def _utf8_error(name: str, line_number: int, offset: int, column: int, line: bytes) -> DataError:
    return DataError(
        f"{name} line {line_number}: invalid UTF-8 byte 0x{line[column]:02x} at byte offset "
        f"{offset} of the file (byte {column + 1} of the line). Re-encode the file as UTF-8, "
        f"e.g. iconv -f latin1 -t utf-8 {name} > converted{Path(name).suffix}"
    )


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def _build_examples(
    table: _Table,
    *,
    text_column: str,
    summary_column: str | None,
    id_column: str | None,
    max_samples: int | None,
    strict: bool,
) -> tuple[list[Example], int, int]:
    """Validate the rows of ``table`` and return (examples, rows read, rows skipped as empty)."""
    required = [("--text-column", text_column)]
    if summary_column is not None:
        required.append(("--summary-column", summary_column))
    if table.columns is not None:
        for flag, column in required:
            if column not in table.columns:
                raise _missing_column_error(table.name, None, column, table.columns, flag)

    examples: list[Example] = []
    rows_read = 0
    skipped = 0
    first_skipped: tuple[int, str] | None = None
    empty_counts = {column: 0 for _, column in required}
    # Closing the generator releases its open file even when a row raises or max_samples stops
    # the loop early.
    with contextlib.closing(table.rows):
        for number, row in table.rows:
            rows_read += 1
            values: dict[str, str] = {}
            for flag, column in required:
                if column not in row:
                    unit = f"{table.unit} {number}"
                    raise _missing_column_error(table.name, unit, column, list(row), flag)
                values[column] = _text_value(row[column], table, number, column)

            empty = [column for _, column in required if not values[column].strip()]
            for column in empty:
                empty_counts[column] += 1
            if empty:
                if strict:
                    raise DataError(
                        f"{table.name} {table.unit} {number}: field {empty[0]!r} is empty; fill it "
                        "in or remove the row, or load without strict mode to skip empty rows"
                    )
                skipped += 1
                if first_skipped is None:
                    first_skipped = (number, empty[0])
                continue

            summary = values[summary_column] if summary_column is not None else None
            example_id = None
            if id_column is not None:
                example_id = _id_value(row.get(id_column), table, number, id_column)
            examples.append(Example(text=values[text_column], summary=summary, id=example_id))
            if max_samples is not None and len(examples) >= max_samples:
                break

    if rows_read == 0:
        raise DataError(f"{table.name} is empty: it contains no data rows")
    if not examples:
        raise _all_empty_error(table, required, empty_counts, rows_read)
    if skipped:
        number, column = first_skipped  # type: ignore[misc]
        logger.warning(
            "skipped %d of %d rows in %s because a required field is empty "
            "(first: %s %d, field %r); strict mode raises an error instead",
            skipped,
            rows_read,
            table.name,
            table.unit,
            number,
            column,
        )
    return examples, rows_read, skipped


def _text_value(value: Any, table: _Table, number: int, column: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(
            f"{table.name} {table.unit} {number}: field {column!r} must be a string, got "
            f"{_json_type(value)} {_short_repr(value)}; store the text as a string"
        )
    return value


def _id_value(value: Any, table: _Table, number: int, column: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise DataError(
        f"{table.name} {table.unit} {number}: field {column!r} (the example id) must be a string "
        f"or an integer, got {_json_type(value)} {_short_repr(value)}"
    )


def _all_empty_error(
    table: _Table, required: list[tuple[str, str]], empty_counts: dict[str, int], rows_read: int
) -> DataError:
    for flag, column in required:
        if empty_counts[column] == rows_read:
            kind = "article" if flag == "--text-column" else "summary"
            return DataError(
                f"{table.name}: column {column!r} is empty in all {rows_read} rows; check that "
                f"{flag} names the column with the {kind} text"
            )
    counts = ", ".join(f"{column!r} empty in {empty_counts[column]}" for _, column in required)
    return DataError(
        f"{table.name}: none of the {rows_read} rows has both a non-empty article and summary "
        f"({counts}); check --text-column and --summary-column"
    )


def _missing_column_error(
    name: str, location: str | None, column: str, present: Sequence[str], flag: str
) -> DataError:
    where = f"{name} {location}" if location else name
    kind = "article" if flag == "--text-column" else "summary"
    message = (
        f"{where}: missing column {column!r} (columns present: {_format_names(present)}); "
        f"pass {flag} NAME to choose the column with the {kind} text"
    )
    close = difflib.get_close_matches(column, [str(name) for name in present], n=1)
    if close:
        message += f", e.g. {flag} {close[0]}"
    return DataError(message)


def _check_max_samples(max_samples: int | None) -> None:
    if max_samples is None:
        return
    if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
        raise DataError(
            f"invalid max_samples {max_samples!r}: expected a positive integer, "
            "or None for all rows"
        )


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number"}
    if isinstance(value, float):
        return "number"
    return names.get(type(value), type(value).__name__)


def _short_repr(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _format_names(names: Iterable[Any]) -> str:
    listed = [str(name) for name in names]
    return ", ".join(listed) if listed else "none"

"""`sumtune score`: ROUGE of predictions stored in a JSON Lines file."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sumtune.errors import DataError

if TYPE_CHECKING:
    from sumtune.metrics import RougeResult

# A JSON Lines record with the 1-based line number it was read from.
Record = tuple[int, dict[str, Any]]

# Tried in this order when --prediction-field is not given. "prediction" is the name this
# command documents, and the published system outputs of FRANK, SummEval, REALSumm and SimCLS
# use "summary".
DEFAULT_PREDICTION_FIELDS = ("prediction", "summary")
DEFAULT_REFERENCE_FIELD = "reference"

DESCRIPTION = """\
Score predictions against references with ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum
(F1 x100, rouge-score with stemming). The input is a JSON Lines file with one object
per line. Without --prediction-field, the prediction is read from "prediction", or from
"summary" when the first row has no "prediction" field.
"""

EPILOG = """\
example:
  sumtune score --input runs/lora/predictions.jsonl
  sumtune score --input outputs.jsonl --group-by system --bootstrap 1000 --json
  cat predictions.jsonl | sumtune score --input -
"""


def non_negative_int(text: str) -> int:
    """Parse an option value that must be a whole number of at least 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid count {text!r}, expected a whole number"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid count {value}, expected 0 or more")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "score",
        help="score predictions in a JSON Lines file with ROUGE",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--input", required=True, metavar="FILE", help="JSON Lines file to score, or - for stdin"
    )
    parser.add_argument(
        "--prediction-field",
        metavar="NAME",
        help='field that contains the prediction (default: "prediction", else "summary")',
    )
    parser.add_argument(
        "--reference-field",
        default=DEFAULT_REFERENCE_FIELD,
        metavar="NAME",
        help=f'field that contains the reference summary (default: "{DEFAULT_REFERENCE_FIELD}")',
    )
    parser.add_argument(
        "--group-by",
        metavar="FIELD",
        help="report one result per value of this field, such as system",
    )
    parser.add_argument(
        "--bootstrap",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="add 95%% confidence intervals from N bootstrap resamples (default: 0, no intervals)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed of the bootstrap resamples (default: 0)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object instead of a table"
    )
    parser.set_defaults(handler=run)


def _format_fields(record: dict[str, Any]) -> str:
    return ", ".join(record) or "none"


def _resolve_prediction_field(requested: str | None, first: Record, name: str) -> str:
    if requested is not None:
        return requested
    line_number, record = first
    for candidate in DEFAULT_PREDICTION_FIELDS:
        if candidate in record:
            return candidate
    looked_for = " and ".join(repr(field) for field in DEFAULT_PREDICTION_FIELDS)
    raise DataError(
        f"{name} line {line_number}: no prediction field; looked for {looked_for} but the "
        f"fields are {_format_fields(record)}; pass --prediction-field NAME"
    )


def _text_field(item: Record, field: str, option: str, name: str) -> str:
    line_number, record = item
    if field not in record:
        raise DataError(
            f"{name} line {line_number}: missing field {field!r} "
            f"(fields present: {_format_fields(record)}); add it to every line or pass "
            f"{option} NAME"
        )
    value = record[field]
    if not isinstance(value, str):
        raise DataError(
            f"{name} line {line_number}: field {field!r} is {json.dumps(value)[:60]}, "
            "expected a string; store the text as one string"
        )
    return value


def _group_key(item: Record, group_by: str, name: str) -> str:
    line_number, record = item
    if group_by not in record:
        raise DataError(
            f"{name} line {line_number}: missing group field {group_by!r} "
            f"(fields present: {_format_fields(record)}); add it to every line or choose "
            "another --group-by field"
        )
    value = record[group_by]
    # JSON output needs string keys, so a number 3 becomes "3" and null becomes "null".
    return value if isinstance(value, str) else json.dumps(value)


def collect_texts(
    records: list[Record],
    name: str,
    prediction_field: str | None,
    reference_field: str,
    group_by: str | None,
) -> dict[str | None, tuple[list[str], list[str]]]:
    """Gather (predictions, references) per group value, or under the key None without grouping.

    Groups keep the order in which their values first appear. Raises DataError naming the
    line of the first record with a missing or non-string field.
    """
    field = _resolve_prediction_field(prediction_field, records[0], name)
    groups: dict[str | None, tuple[list[str], list[str]]] = {}
    for item in records:
        key = _group_key(item, group_by, name) if group_by is not None else None
        predictions, references = groups.setdefault(key, ([], []))
        predictions.append(_text_field(item, field, "--prediction-field", name))
        references.append(_text_field(item, reference_field, "--reference-field", name))
    return groups


def result_to_json(
    result: RougeResult, intervals: Mapping[str, tuple[float, float]] | None
) -> dict[str, Any]:
    """Return a RougeResult's means and count, plus its intervals when given."""
    output: dict[str, Any] = result.to_dict()
    if intervals is not None:
        output["intervals"] = {name: [low, high] for name, (low, high) in intervals.items()}
    return output


def run(args: argparse.Namespace) -> int:
    from sumtune import metrics
    from sumtune.data import read_jsonl_records

    # read_jsonl_records raises DataError naming the line for invalid UTF-8, invalid JSON,
    # a line that is not an object, and an input without records.
    records = read_jsonl_records(args.input, required_fields=())
    name = "standard input" if args.input == "-" else args.input
    groups = collect_texts(
        records, name, args.prediction_field, args.reference_field, args.group_by
    )

    results = {key: metrics.rouge_scores(*texts) for key, texts in groups.items()}
    intervals = None
    if args.bootstrap:
        intervals = {
            key: metrics.bootstrap_intervals(result, n_resamples=args.bootstrap, seed=args.seed)
            for key, result in results.items()
        }

    if args.group_by is None:
        result = results[None]
        interval = intervals[None] if intervals is not None else None
        if args.json:
            print(json.dumps(result_to_json(result, interval)))
        else:
            print(metrics.format_rouge_table(result, interval))
        return 0

    if args.json:
        output = {
            key: result_to_json(result, intervals[key] if intervals is not None else None)
            for key, result in results.items()
        }
        print(json.dumps(output))
    else:
        print(metrics.format_grouped_rouge_table(results, intervals, group_header=args.group_by))
    return 0

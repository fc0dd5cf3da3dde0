"""`sumtune baseline`: ROUGE of extractive baselines that need no model."""

from __future__ import annotations

import argparse
import json

from sumtune.cli.score import non_negative_int, result_to_json

DESCRIPTION = """\
Score an extractive baseline on a data source with the same ROUGE as `sumtune score`.
lead3 takes the first three sentences of each article as its summary.
"""

LEAD3_DESCRIPTION = """\
Score Lead-3, the first three sentences of each article, against the reference
summaries with ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum (F1 x100). The first sentence
keeps any dateline such as "(CNN)".
"""

LEAD3_EPILOG = """\
example:
  sumtune baseline lead3 --data cnn_dailymail --split test
  sumtune baseline lead3 --data test.jsonl --max-samples 500 --json
"""


def positive_int(text: str) -> int:
    """Parse an option value that must be a whole number of at least 1."""
    value = non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("invalid count 0, expected 1 or more")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "baseline",
        help="score an extractive baseline (lead3) with ROUGE",
        description=DESCRIPTION,
        epilog="example:\n  sumtune baseline lead3 --data cnn_dailymail --split test\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    baselines = parser.add_subparsers(dest="baseline", required=True, metavar="BASELINE")

    lead3 = baselines.add_parser(
        "lead3",
        help="first three sentences of each article",
        description=LEAD3_DESCRIPTION,
        epilog=LEAD3_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    lead3.add_argument(
        "--data",
        required=True,
        metavar="SOURCE",
        help="cnn_dailymail (Hugging Face hub), a .jsonl/.json/.csv/.parquet file, "
        "a directory with one file per split, or train=FILE,test=FILE",
    )
    lead3.add_argument("--split", default="test", help="split to score (default: test)")
    lead3.add_argument(
        "--text-column", default="article", help="column with the article (default: article)"
    )
    lead3.add_argument(
        "--summary-column",
        default="highlights",
        help="column with the reference summary (default: highlights)",
    )
    lead3.add_argument(
        "--max-samples",
        type=positive_int,
        metavar="N",
        help="score only the first N usable examples (default: all)",
    )
    lead3.add_argument(
        "--bootstrap",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="add 95%% confidence intervals from N bootstrap resamples (default: 0, no intervals)",
    )
    lead3.add_argument(
        "--seed", type=int, default=0, help="random seed of the bootstrap resamples (default: 0)"
    )
    lead3.add_argument(
        "--json", action="store_true", help="print one JSON object instead of a table"
    )
    lead3.set_defaults(handler=run_lead3)


def run_lead3(args: argparse.Namespace) -> int:
    from sumtune import metrics
    from sumtune.baselines import lead3
    from sumtune.data import load_examples

    examples = load_examples(
        args.data,
        args.split,
        text_column=args.text_column,
        summary_column=args.summary_column,
        max_samples=args.max_samples,
    )
    predictions = [lead3(example.text) for example in examples]
    references = [example.summary for example in examples]
    result = metrics.rouge_scores(predictions, references)
    intervals = None
    if args.bootstrap:
        intervals = metrics.bootstrap_intervals(result, n_resamples=args.bootstrap, seed=args.seed)

    if args.json:
        print(json.dumps(result_to_json(result, intervals)))
        return 0

    print(f"Lead-3 on {args.data} ({args.split})")
    print(metrics.format_rouge_table(result, intervals))
    print(f"mean summary length: {metrics.mean_length(predictions):.1f} words")
    return 0

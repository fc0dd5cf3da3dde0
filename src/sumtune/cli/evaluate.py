"""`sumtune evaluate`: generate summaries for a data split and score them with ROUGE."""

from __future__ import annotations

import argparse
import json

from sumtune.cli.score import non_negative_int

DESCRIPTION = """\
Generate a summary for every article of a split, write predictions.jsonl (id, article,
reference, prediction) and report ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum (F1 x100, rouge-score
with stemming, 95% bootstrap intervals) and the mean generated length in words.

With --run DIR the model is DIR/adapter on its base model, and the source prefix, maximum source
length, columns and generation settings come from DIR/config.yaml. Predictions then go to
DIR/eval/SPLIT/predictions.jsonl, with metrics.json beside it. With --model (and optionally
--adapter) the settings are T5's summarization defaults and predictions go to ./predictions.jsonl.
Options given here override either.
"""

EPILOG = """\
example:
  sumtune evaluate --run runs/lora --data cnn_dailymail --split test --max-samples 500
  sumtune evaluate --model t5-small --data articles.jsonl --num-beams 1 --json
  sumtune evaluate --model t5-small --adapter runs/lora/adapter --data test.jsonl --output preds.jsonl
"""


def positive_int(text: str) -> int:
    value = non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid count {value}, expected 1 or more")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="generate summaries for a data split and score them with ROUGE",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_argument_group("model (pass --run, or --model with an optional --adapter)")
    source.add_argument("--run", metavar="DIR", help="run folder written by `sumtune train` (example: runs/lora)")
    source.add_argument("--model", metavar="ID_OR_DIR",
                        help="base model: hub id or local T5 directory; with --adapter it replaces the base "
                             "named in the adapter (example: t5-small)")
    source.add_argument("--adapter", metavar="DIR", help="method checkpoint directory (example: runs/lora/adapter)")

    data = parser.add_argument_group("data")
    data.add_argument("--data", required=True, metavar="SOURCE",
                      help="cnn_dailymail, a JSONL/CSV/Parquet file or a directory of split files "
                           "(example: articles.jsonl)")
    data.add_argument("--split", default="test", help="split to evaluate (default: test; example: validation)")
    data.add_argument("--max-samples", type=positive_int, metavar="N",
                      help="evaluate only the first N examples (example: 500)")
    data.add_argument("--text-column", metavar="NAME", help="article column (default: article; example: document)")
    data.add_argument("--summary-column", metavar="NAME",
                      help="reference summary column (default: highlights; example: summary)")
    data.add_argument("--strict", action="store_true", help="reject rows with an empty article or summary")

    generation = parser.add_argument_group("generation (default: from the run's config.yaml, else T5's settings)")
    generation.add_argument("--source-prefix", metavar="TEXT", help="text before each article (example: 'summarize: ')")
    generation.add_argument("--max-source-length", type=positive_int, metavar="N", help="article tokens kept (example: 512)")
    generation.add_argument("--num-beams", type=positive_int, metavar="N", help="beam width, 1 is greedy (example: 4)")
    generation.add_argument("--max-new-tokens", type=positive_int, metavar="N", help="maximum summary length in tokens (example: 128)")
    generation.add_argument("--min-new-tokens", type=non_negative_int, metavar="N", help="minimum summary length in tokens (example: 10)")
    generation.add_argument("--length-penalty", type=float, metavar="X", help="beam score exponent on length (example: 2.0)")
    generation.add_argument("--no-repeat-ngram-size", type=non_negative_int, metavar="N",
                            help="never repeat an n-gram of this size; 0 is off (example: 3)")
    generation.add_argument("--batch-size", type=positive_int, metavar="N", help="articles per batch (example: 16)")
    generation.add_argument("--precision", choices=("fp32", "bf16"), help="fp32, or bf16 autocast (example: bf16)")

    output = parser.add_argument_group("output")
    output.add_argument("--output", metavar="FILE", help="where to write predictions (example: preds.jsonl)")
    output.add_argument("--bootstrap", type=non_negative_int, default=1000, metavar="N",
                        help="bootstrap resamples for the 95%% intervals; 0 turns them off (default: 1000)")
    output.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples (default: 0)")
    output.add_argument("--device", metavar="DEVICE", help="torch device (default: cuda when available; example: cpu)")
    output.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from sumtune.errors import ConfigError
    from sumtune.evaluate import evaluate_run
    from sumtune.metrics import format_rouge_table

    if args.run is None and args.model is None and args.adapter is None:
        raise ConfigError(["pass --run DIR (a `sumtune train` run), or --model ID_OR_DIR with an optional --adapter DIR"])
    if args.run is not None and args.adapter is not None:
        raise ConfigError([f"--run {args.run} already names its adapter ({args.run}/adapter); pass --run or --adapter, not both"])
    overrides = {
        "source_prefix": args.source_prefix, "max_source_length": args.max_source_length,
        "text_column": args.text_column, "summary_column": args.summary_column, "num_beams": args.num_beams,
        "max_new_tokens": args.max_new_tokens, "min_new_tokens": args.min_new_tokens,
        "length_penalty": args.length_penalty, "no_repeat_ngram_size": args.no_repeat_ngram_size,
        "eval_batch_size": args.batch_size, "precision": args.precision,
    }
    result = evaluate_run(
        args.run, args.data, args.split, model=args.model, adapter=args.adapter, max_samples=args.max_samples,
        output=args.output, strict=args.strict, bootstrap=args.bootstrap, seed=args.seed, device=args.device,
        **overrides,
    )
    if args.json:
        print(json.dumps(result.to_dict()))
        return 0
    print(format_rouge_table(result.rouge, result.intervals or None))
    print(f"mean generated length: {result.gen_len:.1f} words")
    print(f"predictions: {result.predictions_path}")
    return 0

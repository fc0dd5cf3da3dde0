"""`sumtune summarize`: write a summary for every article in a JSON Lines file."""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = """\
Summarize the articles of a JSON Lines file with a T5 model, a method checkpoint
(--adapter) or a training run (--run, which means --adapter RUN/adapter and takes
the run's source prefix, maximum source length and generation settings as defaults).
Each output line is the input record with a "summary" field added; other fields such
as "id" are kept. Generation options left out take the run's settings, else the
defaults of `sumtune train`: 4 beams, up to 128 new tokens, length penalty 2.0,
no repeated trigrams and early stopping.
"""

EPILOG = """\
example:
  sumtune summarize --model google/flan-t5-small --input articles.jsonl --output summaries.jsonl
  sumtune summarize --run runs/lora --input test.jsonl --output - --num-beams 4
  cat articles.jsonl | sumtune summarize --model ./tiny --input - --output out.jsonl
"""


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}, expected a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {value}, expected 1 or more")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}, expected a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid value {value}, expected 0 or more")
    return value


def early_stopping_value(text: str) -> bool | str:
    choices = {"true": True, "false": False, "never": "never"}
    if text.lower() not in choices:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}, expected true, false or never")
    return choices[text.lower()]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "summarize",
        help="summarize the articles of a JSON Lines file",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", metavar="DIR_OR_ID", help="T5 model directory or Hugging Face hub id")
    source.add_argument("--adapter", metavar="DIR", help="method checkpoint directory (contains adapter_config.json)")
    source.add_argument("--run", metavar="DIR", help="output directory of `sumtune train`")
    parser.add_argument("--base-model", metavar="DIR_OR_ID",
                        help="base model for --adapter or --run, replacing the one named in the checkpoint")
    parser.add_argument("--input", required=True, metavar="FILE", help="JSON Lines file with the articles, or - for stdin")
    parser.add_argument("--output", required=True, metavar="FILE", help="JSON Lines file to write, or - for stdout")
    parser.add_argument("--text-column", default="article", metavar="NAME",
                        help="field that contains the article (default: article)")

    generation = parser.add_argument_group("generation")
    generation.add_argument("--num-beams", type=positive_int, metavar="N", help="beams of beam search; 1 is greedy decoding (default: 4)")
    generation.add_argument("--max-new-tokens", type=positive_int, metavar="N", help="maximum summary length in tokens (default: 128)")
    generation.add_argument("--min-new-tokens", type=non_negative_int, metavar="N",
                            help="minimum summary length in tokens before EOS may be generated (default: 0)")
    generation.add_argument("--length-penalty", type=float, metavar="X",
                            help="beam search scores a hypothesis as log-probability / length ** X, so a larger X "
                            "favors longer summaries (default: 2.0)")
    generation.add_argument("--no-repeat-ngram-size", type=non_negative_int, metavar="N",
                            help="never repeat an n-gram of this size within a summary; 0 turns it off (default: 3)")
    generation.add_argument("--early-stopping", type=early_stopping_value, metavar="{true,false,never}",
                            help="when beam search stops: true once num_beams summaries are finished, false "
                            "once no running beam can score better, never only at the length limit (default: true)")

    inputs = parser.add_argument_group("input and batching")
    inputs.add_argument("--source-prefix", metavar="TEXT",
                        help='text put before every article (default: "summarize: ", or the run\'s); "" disables it')
    inputs.add_argument("--max-source-length", type=positive_int, metavar="N",
                        help="truncate articles to this many tokens, prefix included (default: 512, or the run's)")
    inputs.add_argument("--batch-size", type=positive_int, metavar="N",
                        help="articles generated together (default: 8, or the run's eval_batch_size)")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="allow loading pytorch_model.bin weights, which can run arbitrary code; only for trusted models")
    parser.add_argument("--device", metavar="DEVICE", help="torch device such as cpu or cuda (default: cuda if available)")
    parser.add_argument("--quiet", action="store_true", help="show no progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from sumtune.data import read_jsonl_records, write_jsonl
    from sumtune.errors import DataError
    from sumtune.inference import Summarizer, generation_config_from

    records = read_jsonl_records(args.input, required_fields=[args.text_column])
    input_name = "standard input" if args.input == "-" else args.input
    texts = []
    for line_number, record in records:
        text = record[args.text_column]
        if not isinstance(text, str):
            raise DataError(
                f"{input_name} line {line_number}: field {args.text_column!r} is {type(text).__name__}, "
                "expected a string; store each article as one string"
            )
        texts.append(text)

    summarizer = Summarizer.load(
        args.model, adapter=args.adapter, run=args.run, base_model=args.base_model,
        allow_pickle=args.allow_pickle, device=args.device,
    )
    generation_config = generation_config_from(
        {
            "num_beams": args.num_beams,
            "max_new_tokens": args.max_new_tokens,
            "min_new_tokens": args.min_new_tokens,
            "length_penalty": args.length_penalty,
            "no_repeat_ngram_size": args.no_repeat_ngram_size,
            "early_stopping": args.early_stopping,
        },
        summarizer.generation_config,
    )
    # Status lines go to stderr so that `--output -` leaves clean JSON Lines on stdout.
    print(f"sumtune summarize: {len(texts)} articles, {describe(generation_config)}", file=sys.stderr)

    summaries = summarizer.summarize(
        texts,
        generation_config,
        batch_size=args.batch_size,
        source_prefix=args.source_prefix,
        max_source_length=args.max_source_length,
        progress=not args.quiet,
    )

    overwritten = sum(1 for _, record in records if "summary" in record)
    if overwritten:
        print(f"sumtune summarize: warning: replaced the existing \"summary\" field of {overwritten} records",
              file=sys.stderr)
    output_records = [{**record, "summary": summary} for (_, record), summary in zip(records, summaries)]
    write_jsonl(args.output, output_records)
    if args.output != "-":
        print(f"wrote {len(output_records)} summaries to {args.output}")
    return 0


def describe(config) -> str:
    return (
        f"num_beams={config.num_beams}, max_new_tokens={config.max_new_tokens}, min_new_tokens={config.min_new_tokens}, "
        f"length_penalty={config.length_penalty}, no_repeat_ngram_size={config.no_repeat_ngram_size}, "
        f"early_stopping={config.early_stopping}"
    )

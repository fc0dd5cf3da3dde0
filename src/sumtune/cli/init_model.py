"""`sumtune init-model`: build a small random T5 with a tokenizer trained on local text."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Kept in step with sumtune.model.tiny.TINY_CONFIGS, which is not imported here so that --help stays
# fast; `run` checks the kind against TINY_CONFIGS itself.
KINDS = ("tiny", "tiny-gated")

DESCRIPTION = """\
Build a small T5 with random weights and a Unigram tokenizer trained on a local corpus,
saved in the layout of a Hugging Face checkpoint (config.json, model.safetensors and
tokenizer files). It loads with --model DIR in every sumtune command and with
transformers' T5ForConditionalGeneration. Use it to try training and evaluation
offline. Its summaries mean nothing until it is trained.

kinds:
  tiny        ReLU feed-forward and tied embeddings, as in the original T5
  tiny-gated  gated-GELU feed-forward and an untied output layer, as in T5 v1.1 and FLAN-T5

The corpus is a text file (one document a line) or a JSON Lines file, whose string
fields longer than 20 characters are all used.
"""

EPILOG = """\
example:
  sumtune init-model tiny --output models/tiny --corpus ../shared/data/cnndm/frank_cnndm_test250.jsonl
  sumtune init-model tiny-gated --output models/tiny-gated --corpus articles.txt --vocab-size 4000
"""


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}, expected a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {value}, expected 1 or more")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "init-model",
        help="build a small random T5 and tokenizer for offline work",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("kind", nargs="?", metavar="KIND", help=f"model shape: {' or '.join(KINDS)} (default: tiny)")
    parser.add_argument("--kind", dest="kind_option", metavar="KIND", help="the same as the KIND argument")
    parser.add_argument("--output", required=True, metavar="DIR", help="directory to write the model into")
    parser.add_argument("--corpus", required=True, metavar="FILE",
                        help="text or JSON Lines file to train the tokenizer on")
    parser.add_argument("--vocab-size", type=positive_int, default=2000, metavar="N",
                        help="tokenizer vocabulary size, special tokens included (default: 2000, minimum 100)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the weights (default: 0); tokenizer training in the tokenizers "
                        "library is not seeded, and its vocabulary can differ slightly between runs")
    parser.add_argument("--overwrite", action="store_true", help="replace a model that already exists in --output")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from sumtune.errors import ConfigError
    from sumtune.model.tiny import TINY_CONFIGS, init_model

    if args.kind is not None and args.kind_option is not None and args.kind != args.kind_option:
        raise ConfigError([f"KIND {args.kind!r} and --kind {args.kind_option!r} differ; give one of them"])
    kind = args.kind or args.kind_option or "tiny"
    if kind not in TINY_CONFIGS:
        raise ConfigError([f"unknown model kind {kind!r}; expected one of {', '.join(TINY_CONFIGS)}"])
    output = Path(args.output)
    if (output / "config.json").exists() and not args.overwrite:
        raise ConfigError([f"{output} already contains a model (config.json); pass --overwrite to replace it"])

    model_dir = init_model(kind, output, args.corpus, vocab_size=args.vocab_size, seed=args.seed)

    from sumtune.model.weights import read_config

    config = read_config(model_dir)
    print(f"wrote a {kind} T5 to {model_dir}:")
    for path in sorted(model_dir.iterdir()):
        if path.is_file():
            print(f"  {path.name} ({path.stat().st_size:,} bytes)")
    print(
        f"  d_model={config.d_model}, layers={config.num_layers}+{config.num_decoder_layers}, "
        f"heads={config.num_heads}, feed_forward={config.feed_forward_proj}, vocabulary={config.vocab_size} tokens"
    )
    if config.vocab_size < args.vocab_size:
        print(
            f"sumtune init-model: note: the corpus yielded {config.vocab_size} tokens, fewer than --vocab-size "
            f"{args.vocab_size}",
            file=sys.stderr,
        )
    print(
        "sumtune init-model: warning: the weights are random, so its summaries mean nothing until it is trained",
        file=sys.stderr,
    )
    return 0

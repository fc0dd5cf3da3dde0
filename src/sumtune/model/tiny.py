"""Small random T5 models with locally trained tokenizers, for offline work and tests."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

from sumtune.errors import DataError, SumtuneError
from sumtune.model.config import T5Config
from sumtune.model.t5 import T5
from sumtune.model.weights import init_weights, save_t5

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"

# Shapes small enough to train for a few steps on a CPU in seconds.
TINY_CONFIGS = {
    "tiny": T5Config(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4,
                     relative_attention_num_buckets=32, relative_attention_max_distance=128, dropout_rate=0.1),
    "tiny-gated": T5Config(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4,
                           feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.1),
}


def corpus_texts(path: str | Path) -> Iterator[str]:
    """Yield training text from a plain text file (one document a line) or a JSONL file (all string fields)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"corpus file {path} not found")
    with path.open(encoding="utf-8", errors="strict") as handle:
        try:
            for line_number, line in enumerate(handle, 1):
                line = line.strip()
                if not line:
                    continue
                if path.suffix in (".jsonl", ".json"):
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as error:
                        raise DataError(f"{path}:{line_number}: invalid JSON ({error.msg})") from error
                    yield from (value for value in record.values() if isinstance(value, str) and len(value) > 20)
                else:
                    yield line
        except UnicodeDecodeError as error:
            raise DataError(f"{path}: not valid UTF-8 ({error.reason} at byte {error.start}); re-encode it as UTF-8") from error


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2000):
    """Train a Unigram tokenizer (the SentencePiece model family T5 uses) with T5's special tokens.

    Ids 0, 1 and 2 are <pad>, </s> and <unk> as in T5, and </s> is appended to every encoded text.
    """
    from tokenizers import SentencePieceUnigramTokenizer
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    backend = SentencePieceUnigramTokenizer()
    backend.train_from_iterator(texts, vocab_size=vocab_size, special_tokens=[PAD, EOS, UNK], unk_token=UNK, show_progress=False)
    backend.post_processor = TemplateProcessing(single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=PAD, eos_token=EOS, unk_token=UNK)
    if tokenizer.convert_tokens_to_ids([PAD, EOS, UNK]) != [0, 1, 2]:
        raise SumtuneError("tokenizer training placed the special tokens at unexpected ids")
    return tokenizer


def init_model(kind: str, output_dir: str | Path, corpus: str | Path, vocab_size: int = 2000, seed: int = 0) -> Path:
    """Build a random T5 of shape `kind` with a tokenizer trained on `corpus`, saved like a hub checkpoint."""
    if kind not in TINY_CONFIGS:
        raise SumtuneError(f"unknown model kind {kind!r}; choose one of {', '.join(TINY_CONFIGS)}")
    if vocab_size < 100:
        raise SumtuneError(f"--vocab-size must be at least 100, got {vocab_size}")
    texts = list(corpus_texts(corpus))
    if not texts:
        raise DataError(f"corpus file {corpus} contains no text")
    tokenizer = train_tokenizer(texts, vocab_size)
    config = replace(TINY_CONFIGS[kind], vocab_size=len(tokenizer))
    model = T5(config)
    init_weights(model, seed)
    output_dir = Path(output_dir)
    save_t5(model, output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir

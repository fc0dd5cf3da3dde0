"""Shared fixtures: real CNN/DailyMail articles, tiny model directories and transformers reference models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CNNDM_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cnndm"
FRANK_FILE = CNNDM_DIR / "frank_cnndm_test250.jsonl"

# Used to train the tiny tokenizer when the shared CNN/DailyMail folder is missing (a user's machine).
FALLBACK_SENTENCES = [
    "The city council approved a new budget on Tuesday after a long debate about schools and roads.",
    "Officials said the storm knocked out power to thousands of homes along the coast overnight.",
    "The team won its third straight match, with the captain scoring twice in the second half.",
    "Researchers reported that the new treatment reduced symptoms in most patients within a month.",
    "Police arrested two men in connection with the robbery, according to a statement released today.",
    "The company announced record profits and said it would hire hundreds of workers next year.",
    "Thousands of people gathered in the square to celebrate the anniversary of the national holiday.",
    "The minister resigned after reports that public money had been spent on private travel.",
]


def fallback_articles(count: int) -> list[dict]:
    """Build `count` small synthetic articles from FALLBACK_SENTENCES, in the FRANK record format."""
    articles = []
    for index in range(count):
        sentences = [FALLBACK_SENTENCES[(index + step) % len(FALLBACK_SENTENCES)] for step in range(5)]
        articles.append({"id": f"fallback-{index}", "article": " ".join(sentences), "highlights": sentences[0]})
    return articles


def read_frank_articles(count: int) -> list[dict]:
    """Read the first `count` FRANK records (id, article, highlights), or synthetic ones without the shared data."""
    if not FRANK_FILE.is_file():
        return fallback_articles(count)
    rows = []
    with FRANK_FILE.open(encoding="utf-8") as stream:
        for line in stream:
            record = json.loads(line)
            rows.append({"id": record["id"], "article": record["article"], "highlights": record["highlights"]})
            if len(rows) == count:
                break
    return rows


@pytest.fixture(scope="module")
def single_thread():
    """Run a module's tests on one torch thread, then restore the previous count.

    Tiny models gain nothing from a second thread, and when another process keeps the other core
    busy, torch's spinning worker threads make small matrix products 10 to 100 times slower.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# Records of the corpus that trains the tiny tokenizers. All 250 FRANK records take 6 to 30 seconds
# to train on two cores; 60 take under a second and still fill a 2,000-token vocabulary.
CORPUS_RECORDS = 60


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """A JSONL corpus (article and highlights) of real FRANK records, or of the fallback articles."""
    records = read_frank_articles(CORPUS_RECORDS) if FRANK_FILE.is_file() else fallback_articles(40)
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    with path.open("w", encoding="utf-8") as stream:
        for record in records:
            stream.write(json.dumps({"article": record["article"], "highlights": record["highlights"]}) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_corpus) -> Path:
    """A random "tiny" T5 (ReLU, tied embeddings) with a tokenizer trained on real articles, built once.

    Untrained, it generates only <pad>: the start token's embedding dominates the residual stream and
    the tied output layer maps it back to itself. Use `tiny_gated_model_dir` where generated text matters.
    """
    from sumtune.model.tiny import init_model

    return init_model("tiny", tmp_path_factory.mktemp("tiny-model") / "tiny", tiny_corpus, vocab_size=2000, seed=0)


@pytest.fixture(scope="session")
def tiny_gated_model_dir(tmp_path_factory, tiny_corpus) -> Path:
    """A random "tiny-gated" T5 (gated GELU, untied head) with the same kind of tokenizer, built once."""
    from sumtune.model.tiny import init_model

    return init_model("tiny-gated", tmp_path_factory.mktemp("tiny-gated-model") / "tiny-gated", tiny_corpus, vocab_size=2000, seed=1)


@pytest.fixture(scope="session")
def real_articles() -> list[dict]:
    """Eight real CNN/DailyMail records (or synthetic ones without the shared data)."""
    return read_frank_articles(8)


# -- transformers reference models ----------------------------------------------------------------

# Small configs of each T5 variant; the dictionaries are keyword arguments of transformers.T5Config.
VARIANTS = {
    "relu-tied": dict(feed_forward_proj="relu", tie_word_embeddings=True),
    "gated-gelu-untied": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False),
    # t5-3b and t5-11b have num_heads * d_kv != d_model.
    "relu-tied-wide-kv": dict(feed_forward_proj="relu", tie_word_embeddings=True, d_kv=12),
}


def hf_t5_config(variant: str = "relu-tied", **overrides):
    """Return a small transformers.T5Config of one of VARIANTS, dropout off."""
    import transformers

    values = dict(
        vocab_size=96, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=20, dropout_rate=0.0,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    values.update(VARIANTS[variant])
    values.update(overrides)
    return transformers.T5Config(**values)


def build_hf_model(hf_config, seed: int):
    """Build transformers' T5ForConditionalGeneration with seeded random weights, in eval mode.

    Layer norm weights are moved away from one so that a norm mapped to the wrong place changes the output.
    """
    import torch
    import transformers

    torch.manual_seed(seed)
    model = transformers.T5ForConditionalGeneration(hf_config)
    generator = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "layer_norm" in name:
                parameter.copy_(1.0 + 0.2 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def sumtune_from_hf(hf_model):
    """Build sumtune's T5 holding the same weights as a transformers model, in eval mode."""
    from sumtune.model import T5, T5Config
    from sumtune.model.weights import hf_to_sumtune_name

    config = T5Config.from_hf_dict(hf_model.config.to_dict())
    model = T5(config)
    state = {}
    for hf_name, tensor in hf_model.state_dict().items():
        name = hf_to_sumtune_name(hf_name)
        if name is not None:
            state[name] = tensor.clone()
    if model.lm_head is None:
        state.pop("lm_head.weight", None)
    model.load_state_dict(state, strict=True)
    return model.eval()


def build_model_pair(variant: str = "relu-tied", seed: int = 0, **overrides):
    """Return (transformers model, sumtune model) with identical random weights."""
    hf_model = build_hf_model(hf_t5_config(variant, **overrides), seed)
    return hf_model, sumtune_from_hf(hf_model)


def random_batch(vocab_size: int, lengths: list[int], seed: int):
    """Return right-padded (input_ids, attention_mask) with the given unpadded lengths and no special ids."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    input_ids = torch.randint(3, vocab_size, (len(lengths), width), generator=generator)
    attention_mask = torch.zeros_like(input_ids)
    for row, length in enumerate(lengths):
        attention_mask[row, :length] = 1
        input_ids[row, length:] = 0
        input_ids[row, length - 1] = 1  # the tokenizer ends every source with EOS
    return input_ids, attention_mask

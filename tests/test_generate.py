"""Greedy and beam-search generation against transformers' `generate`, and cached against cache-less decoding."""

from __future__ import annotations

import pytest
import torch
import transformers
from torch import nn

from conftest import build_model_pair, random_batch
from sumtune.errors import ConfigError
from sumtune.model import GenerationConfig, PrefixKV, generate

pytestmark = pytest.mark.usefixtures("single_thread")

EOS = 1
MAX_NEW_TOKENS = 20


def boost_eos(hf_model, model, factor: float) -> None:
    """Scale the EOS output row in both models so that hypotheses end at different steps."""
    with torch.no_grad():
        hf_model.shared.weight[EOS] *= factor
        model.shared.weight[EOS] *= factor
        if model.lm_head is not None:
            model.lm_head.weight[EOS] *= factor


def reference_generate(hf_model, input_ids, attention_mask, **settings) -> list[list[int]]:
    """Run transformers' generate and cut each row after its first EOS.

    transformers fills the rest of a finished row with the pad id, which is also the start id (0),
    or with EOS for beam search, so only the tokens through the first EOS are comparable.
    """
    config = transformers.GenerationConfig(
        do_sample=False, decoder_start_token_id=0, eos_token_id=EOS, pad_token_id=0, **settings
    )
    output = hf_model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
    rows = []
    for row in output[:, 1:].tolist():
        rows.append(row[: row.index(EOS) + 1] if EOS in row else row)
    return rows


# (variant, seed, EOS boost, length_penalty); a boost above one makes EOS likely enough that some
# rows finish early, which exercises the finishing and early-stopping logic.
BEAM_CASES = [
    ("relu-tied", 0, 3.0, 1.5),
    ("relu-tied", 1, 1.0, 1.0),
    ("relu-tied", 2, 3.0, 0.6),
    ("gated-gelu-untied", 0, 3.0, 2.0),
    ("gated-gelu-untied", 1, 3.0, 1.5),
    ("relu-tied-wide-kv", 1, 3.0, 1.2),
]


@pytest.mark.parametrize("early_stopping", [False, True, "never"], ids=["es-false", "es-true", "es-never"])
@pytest.mark.parametrize(("variant", "seed", "boost", "length_penalty"), BEAM_CASES)
def test_beam_search_matches_transformers(variant, seed, boost, length_penalty, early_stopping):
    hf_model, model = build_model_pair(variant, seed)
    boost_eos(hf_model, model, boost)
    input_ids, attention_mask = random_batch(model.config.vocab_size, [12, 7, 10], seed)
    settings = dict(
        num_beams=4, max_new_tokens=MAX_NEW_TOKENS, min_new_tokens=3, length_penalty=length_penalty,
        no_repeat_ngram_size=3, early_stopping=early_stopping,
    )

    expected = reference_generate(hf_model, input_ids, attention_mask, **settings)
    actual = generate(model, input_ids, attention_mask, GenerationConfig(**settings))

    assert actual == expected


@pytest.mark.parametrize(("variant", "seed", "boost"), [
    ("relu-tied", 0, 3.0), ("relu-tied", 2, 1.0), ("gated-gelu-untied", 1, 3.0), ("relu-tied-wide-kv", 2, 3.0),
])
def test_greedy_matches_transformers(variant, seed, boost):
    hf_model, model = build_model_pair(variant, seed)
    boost_eos(hf_model, model, boost)
    input_ids, attention_mask = random_batch(model.config.vocab_size, [12, 7, 10], seed)
    settings = dict(num_beams=1, max_new_tokens=MAX_NEW_TOKENS, min_new_tokens=3, no_repeat_ngram_size=3)

    expected = reference_generate(hf_model, input_ids, attention_mask, **settings)
    actual = generate(model, input_ids, attention_mask, GenerationConfig(**settings))

    assert actual == expected


def test_parity_cases_finish_rows_early():
    # Guards the cases above: without early EOS the finishing logic would go untested.
    hf_model, model = build_model_pair("relu-tied", 0)
    boost_eos(hf_model, model, 3.0)
    input_ids, attention_mask = random_batch(model.config.vocab_size, [12, 7, 10], 0)

    beams = generate(model, input_ids, attention_mask, GenerationConfig(
        num_beams=4, max_new_tokens=MAX_NEW_TOKENS, min_new_tokens=3, length_penalty=1.5,
        no_repeat_ngram_size=3, early_stopping=True,
    ))
    greedy = generate(model, input_ids, attention_mask, GenerationConfig(max_new_tokens=MAX_NEW_TOKENS, min_new_tokens=3))

    assert any(len(row) < MAX_NEW_TOKENS for row in beams)
    assert all(row[-1] == EOS for row in greedy if len(row) < MAX_NEW_TOKENS)
    assert any(len(row) < MAX_NEW_TOKENS for row in greedy)


def test_min_new_tokens_delays_eos():
    hf_model, model = build_model_pair("relu-tied", 0)
    boost_eos(hf_model, model, 3.0)
    input_ids, attention_mask = random_batch(model.config.vocab_size, [12, 7, 10], 0)

    short = generate(model, input_ids, attention_mask, GenerationConfig(max_new_tokens=30))
    delayed = generate(model, input_ids, attention_mask, GenerationConfig(max_new_tokens=30, min_new_tokens=8))

    assert min(len(row) for row in short) < 8
    assert all(len(row) >= 9 for row in delayed)  # 8 tokens, then EOS at the earliest


def test_no_repeat_ngram_leaves_no_repeated_trigram():
    _, model = build_model_pair("gated-gelu-untied", 2)
    input_ids, attention_mask = random_batch(model.config.vocab_size, [12, 7], 2)
    for num_beams in (1, 4):
        rows = generate(model, input_ids, attention_mask, GenerationConfig(
            num_beams=num_beams, max_new_tokens=40, no_repeat_ngram_size=3,
        ))
        for row in rows:
            tokens = [0] + row  # the start token counts, as in transformers
            trigrams = [tuple(tokens[i : i + 3]) for i in range(len(tokens) - 2)]
            assert len(trigrams) == len(set(trigrams))


@pytest.mark.parametrize("variant", ["relu-tied", "gated-gelu-untied", "relu-tied-wide-kv"])
@pytest.mark.parametrize("num_beams", [1, 4])
def test_cached_decoding_equals_cacheless(variant, num_beams):
    _, model = build_model_pair(variant, 3)
    input_ids, attention_mask = random_batch(model.config.vocab_size, [12, 7, 10], 3)
    config = GenerationConfig(num_beams=num_beams, max_new_tokens=MAX_NEW_TOKENS, length_penalty=1.3, no_repeat_ngram_size=3)

    cached = generate(model, input_ids, attention_mask, config, use_cache=True)
    recomputed = generate(model, input_ids, attention_mask, config, use_cache=False)

    assert cached == recomputed


def test_cached_decoding_with_unequal_layer_counts():
    # transformers' generate fails on this shape, so the cache-less path is the reference.
    _, model = build_model_pair("gated-gelu-untied", 4, num_layers=3, num_decoder_layers=1)
    input_ids, attention_mask = random_batch(model.config.vocab_size, [9, 5], 4)
    for num_beams in (1, 4):
        config = GenerationConfig(num_beams=num_beams, max_new_tokens=15)
        assert generate(model, input_ids, attention_mask, config) == generate(
            model, input_ids, attention_mask, config, use_cache=False
        )


class RandomPrefix(nn.Module):
    """Fixed random keys and values for all three attention kinds, in the shape `T5.kv_prefix` returns."""

    def __init__(self, config, length: int, seed: int):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.tables = {}
        for kind, layers in (("encoder_self", config.num_layers), ("decoder_self", config.num_decoder_layers),
                             ("decoder_cross", config.num_decoder_layers)):
            self.tables[kind] = [
                tuple(torch.randn(1, config.num_heads, length, config.d_kv, generator=generator) for _ in range(2))
                for _ in range(layers)
            ]

    def forward(self, batch_size: int) -> PrefixKV:
        expanded = {
            kind: [(key.expand(batch_size, -1, -1, -1), value.expand(batch_size, -1, -1, -1)) for key, value in layers]
            for kind, layers in self.tables.items()
        }
        return PrefixKV(**expanded)


class RandomPrompt(nn.Module):
    def __init__(self, config, length: int, seed: int):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.embeddings = nn.Parameter(torch.randn(length, config.d_model, generator=generator))

    def forward(self, batch_size: int) -> torch.Tensor:
        return self.embeddings[None].expand(batch_size, -1, -1)


@pytest.mark.parametrize("num_beams", [1, 4])
def test_cached_decoding_with_prefix_and_prompt(num_beams):
    _, model = build_model_pair("gated-gelu-untied", 5)
    model.kv_prefix = RandomPrefix(model.config, length=3, seed=5)
    model.input_prompt = RandomPrompt(model.config, length=2, seed=6)
    input_ids, attention_mask = random_batch(model.config.vocab_size, [12, 7, 10], 5)
    config = GenerationConfig(num_beams=num_beams, max_new_tokens=MAX_NEW_TOKENS)

    cached = generate(model, input_ids, attention_mask, config, use_cache=True)
    recomputed = generate(model, input_ids, attention_mask, config, use_cache=False)
    plain = generate(build_model_pair("gated-gelu-untied", 5)[1], input_ids, attention_mask, config)

    assert cached == recomputed
    assert cached != plain  # the prefix and prompt take part in generation


def test_greedy_with_prefix_equals_teacher_forced_argmax():
    # An independent reference for the cached prefix path: the full forward pass over the generated
    # sequence must predict each generated token as its argmax.
    _, model = build_model_pair("relu-tied", 6)
    model.kv_prefix = RandomPrefix(model.config, length=4, seed=7)
    input_ids, attention_mask = random_batch(model.config.vocab_size, [10, 6], 6)

    rows = generate(model, input_ids, attention_mask, GenerationConfig(max_new_tokens=12))
    for index, row in enumerate(rows):
        decoder_input_ids = torch.tensor([[0] + row[:-1]])
        with torch.no_grad():
            logits = model(input_ids[index : index + 1], attention_mask[index : index + 1], decoder_input_ids=decoder_input_ids).logits
        assert logits[0].argmax(-1).tolist() == row


def test_generate_restores_training_mode():
    _, model = build_model_pair("relu-tied", 0)
    model.train()
    input_ids, attention_mask = random_batch(model.config.vocab_size, [5], 0)

    generate(model, input_ids, attention_mask, GenerationConfig(max_new_tokens=3))

    assert model.training


def test_invalid_generation_config_lists_problems():
    with pytest.raises(ConfigError) as error:
        GenerationConfig(max_new_tokens=5, min_new_tokens=9, num_beams=0, early_stopping="sometimes")
    assert error.value.problems == [
        "min_new_tokens must be between 0 and max_new_tokens (5), got 9",
        "num_beams must be at least 1, got 0",
        "early_stopping must be true, false or 'never', got 'sometimes'",
    ]

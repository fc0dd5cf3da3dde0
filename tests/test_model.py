"""sumtune's T5 forward pass against transformers' T5ForConditionalGeneration with the same weights."""

from __future__ import annotations

import pytest
import torch

from conftest import VARIANTS, build_model_pair, random_batch
from sumtune.model import T5, T5Config
from sumtune.model.t5 import relative_position_bucket

pytestmark = pytest.mark.usefixtures("single_thread")

TOLERANCE = 1e-5
SEEDS = (0, 1, 2)


def decoder_batch(vocab_size: int, batch: int, length: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed + 500)
    return torch.randint(2, vocab_size, (batch, length), generator=generator)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "padded"])
def test_logits_match_transformers(variant, seed, padded):
    hf_model, model = build_model_pair(variant, seed)
    lengths = [11, 6, 9] if padded else [11, 11, 11]
    input_ids, attention_mask = random_batch(hf_model.config.vocab_size, lengths, seed)
    decoder_input_ids = decoder_batch(hf_model.config.vocab_size, 3, 7, seed)

    with torch.no_grad():
        expected = hf_model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids)
        actual = model(input_ids, attention_mask, decoder_input_ids=decoder_input_ids)

    assert actual.logits.shape == expected.logits.shape
    assert (actual.logits - expected.logits).abs().max().item() < TOLERANCE
    mask = attention_mask.bool()
    encoder_difference = (actual.encoder_hidden - expected.encoder_last_hidden_state)[mask].abs().max().item()
    assert encoder_difference < TOLERANCE


@pytest.mark.parametrize("seed", SEEDS)
def test_logits_match_with_unequal_layer_counts(seed):
    hf_model, model = build_model_pair("gated-gelu-untied", seed, num_layers=3, num_decoder_layers=1)
    assert len(model.encoder.blocks) == 3
    assert len(model.decoder.blocks) == 1
    input_ids, attention_mask = random_batch(hf_model.config.vocab_size, [9, 4], seed)
    decoder_input_ids = decoder_batch(hf_model.config.vocab_size, 2, 5, seed)

    with torch.no_grad():
        expected = hf_model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids).logits
        actual = model(input_ids, attention_mask, decoder_input_ids=decoder_input_ids).logits

    assert (actual - expected).abs().max().item() < TOLERANCE


def test_long_inputs_reach_far_position_buckets():
    # Lengths beyond relative_attention_max_distance (20 here) use the log-spaced and the last buckets.
    hf_model, model = build_model_pair("relu-tied", seed=3)
    input_ids, attention_mask = random_batch(hf_model.config.vocab_size, [60, 33], seed=3)
    decoder_input_ids = decoder_batch(hf_model.config.vocab_size, 2, 40, seed=3)

    with torch.no_grad():
        expected = hf_model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids).logits
        actual = model(input_ids, attention_mask, decoder_input_ids=decoder_input_ids).logits

    assert (actual - expected).abs().max().item() < TOLERANCE


@pytest.mark.parametrize("variant", ["relu-tied", "gated-gelu-untied"])
def test_loss_and_padded_labels_match_transformers(variant):
    hf_model, model = build_model_pair(variant, seed=4)
    input_ids, attention_mask = random_batch(hf_model.config.vocab_size, [10, 7, 5], seed=4)
    labels = decoder_batch(hf_model.config.vocab_size, 3, 6, seed=4)
    labels[1, 4:] = -100
    labels[2, 2:] = -100

    with torch.no_grad():
        expected = hf_model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        actual = model(input_ids, attention_mask, labels=labels)

    assert (actual.logits - expected.logits).abs().max().item() < TOLERANCE
    assert abs(actual.loss.item() - expected.loss.item()) < TOLERANCE


def test_label_smoothing_matches_torch_reference():
    _, model = build_model_pair("relu-tied", seed=5)
    input_ids, attention_mask = random_batch(model.config.vocab_size, [8, 6], seed=5)
    labels = decoder_batch(model.config.vocab_size, 2, 5, seed=5)
    labels[1, 3:] = -100

    with torch.no_grad():
        output = model(input_ids, attention_mask, labels=labels, label_smoothing=0.1)
    reference = torch.nn.CrossEntropyLoss(ignore_index=-100, label_smoothing=0.1)(
        output.logits.view(-1, output.logits.shape[-1]), labels.view(-1)
    )

    assert abs(output.loss.item() - reference.item()) < 1e-6


def test_decoder_attention_mask_matches_transformers():
    hf_model, model = build_model_pair("relu-tied", seed=6)
    input_ids, attention_mask = random_batch(hf_model.config.vocab_size, [8, 8], seed=6)
    decoder_input_ids = decoder_batch(hf_model.config.vocab_size, 2, 6, seed=6)
    decoder_attention_mask = torch.ones_like(decoder_input_ids)
    decoder_attention_mask[1, 4:] = 0

    with torch.no_grad():
        expected = hf_model(
            input_ids=input_ids, attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids, decoder_attention_mask=decoder_attention_mask,
        ).logits
        actual = model(
            input_ids, attention_mask, decoder_input_ids=decoder_input_ids, decoder_attention_mask=decoder_attention_mask
        ).logits

    # Rows of padded decoder positions are not compared: transformers and sumtune both leave them unused.
    assert (actual[0] - expected[0]).abs().max().item() < TOLERANCE
    assert (actual[1, :4] - expected[1, :4]).abs().max().item() < TOLERANCE


def test_shift_right_matches_transformers():
    hf_model, model = build_model_pair("relu-tied", seed=0)
    labels = torch.tensor([[5, 6, 7, 1], [8, 1, -100, -100]])

    assert torch.equal(model.shift_right(labels), hf_model._shift_right(labels))


def test_relative_position_buckets_match_transformers():
    from transformers.models.t5.modeling_t5 import T5Attention

    relative = torch.arange(-300, 301)[None, :]
    for bidirectional in (True, False):
        for num_buckets, max_distance in ((32, 128), (8, 20), (16, 64)):
            expected = T5Attention._relative_position_bucket(
                relative, bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance
            )
            actual = relative_position_bucket(relative, bidirectional, num_buckets, max_distance)
            assert torch.equal(actual, expected), (bidirectional, num_buckets, max_distance)


def test_gradients_match_transformers():
    hf_model, model = build_model_pair("gated-gelu-untied", seed=7)
    input_ids, attention_mask = random_batch(hf_model.config.vocab_size, [9, 5], seed=7)
    labels = decoder_batch(hf_model.config.vocab_size, 2, 5, seed=7)

    hf_model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss.backward()
    model(input_ids, attention_mask, labels=labels).loss.backward()

    hf_grad = hf_model.encoder.block[1].layer[0].SelfAttention.q.weight.grad
    our_grad = model.encoder.blocks[1].self_attn.inner.q.weight.grad
    assert (hf_grad - our_grad).abs().max().item() < 1e-5
    hf_bias_grad = hf_model.decoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight.grad
    assert (hf_bias_grad - model.decoder.relative_bias.weight.grad).abs().max().item() < 1e-5


def test_invalid_config_lists_every_problem():
    from sumtune.errors import CheckpointError

    with pytest.raises(CheckpointError) as error:
        T5Config(d_model=0, feed_forward_proj="swiglu")
    message = str(error.value)
    assert "d_model must be positive, got 0" in message
    assert "feed_forward_proj='swiglu'" in message


def test_fingerprint_depends_on_shapes_only():
    base = T5Config(d_model=32, d_kv=8, d_ff=48, num_heads=4, vocab_size=96)
    same_shape = T5Config(d_model=32, d_kv=8, d_ff=48, num_heads=4, vocab_size=96, dropout_rate=0.3)
    other_shape = T5Config(d_model=32, d_kv=8, d_ff=64, num_heads=4, vocab_size=96)

    assert base.fingerprint() == same_shape.fingerprint()
    assert base.fingerprint() != other_shape.fingerprint()


def test_hook_points_exist_on_every_sublayer():
    model = T5(T5Config(vocab_size=50, d_model=16, d_kv=4, d_ff=24, num_layers=2, num_decoder_layers=1, num_heads=2))

    for block in model.encoder.blocks:
        assert block.self_attn.adapter is None
        assert block.ffn.adapter is None
        assert block.cross_attn is None
        assert isinstance(block.self_attn.inner.q, torch.nn.Linear)
    for block in model.decoder.blocks:
        assert block.cross_attn.adapter is None
        assert isinstance(block.cross_attn.inner.v, torch.nn.Linear)
    assert model.kv_prefix is None
    assert model.input_prompt is None


@pytest.mark.parametrize("variant", ["relu-tied", "gated-gelu-untied"])
def test_logits_match_transformers_eager_attention(variant):
    # transformers 5 runs T5 attention through scaled_dot_product_attention by default; its eager
    # implementation is the original formulation, so check against it as well.
    hf_model, model = build_model_pair(variant, seed=8, attn_implementation="eager")
    assert hf_model.config._attn_implementation == "eager"
    input_ids, attention_mask = random_batch(hf_model.config.vocab_size, [10, 4, 7], seed=8)
    decoder_input_ids = decoder_batch(hf_model.config.vocab_size, 3, 6, seed=8)

    with torch.no_grad():
        expected = hf_model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids).logits
        actual = model(input_ids, attention_mask, decoder_input_ids=decoder_input_ids).logits

    assert (actual - expected).abs().max().item() < TOLERANCE

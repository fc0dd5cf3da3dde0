"""sumtune's CPU dropout: mask statistics, gradients, and equality with PyTorch's attention and transformers' T5."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import build_model_pair, random_batch
from sumtune.model.t5 import Dropout, attention_with_cpu_dropout, cpu_dropout, dropout_mask
from sumtune.train.prepare import set_dropout

# Far below float32 resolution: the mask keeps everything, so the training path must equal eval.
NEGLIGIBLE_RATE = 1e-12


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_mask_keep_rate(rate):
    torch.manual_seed(0)
    keep, scale = dropout_mask(torch.Size([1000, 1000]), rate, torch.device("cpu"))
    flat = keep.flatten().float()
    # Positions 0, 1, 2 and 3 modulo 4 come from the four 16-bit lanes of each 64-bit draw.
    # A standard deviation of the mean is at most 0.001 here, so 0.007 is 7 of them.
    for lane in range(4):
        assert abs(flat[lane::4].mean().item() - (1 - rate)) < 0.007
    assert scale == pytest.approx(1 / (1 - rate), rel=1e-4)


def test_mask_rounds_rate_to_15_bits():
    keep, scale = dropout_mask(torch.Size([4]), 0.1, torch.device("cpu"))
    assert scale == 32768 / (32768 - 3277)
    assert dropout_mask(torch.Size([4]), 0.99999, torch.device("cpu")) is None
    assert torch.equal(cpu_dropout(torch.ones(4), 0.99999), torch.zeros(4))


def test_dropout_keeps_expected_value():
    torch.manual_seed(1)
    x = torch.ones(1_000_000)
    out = cpu_dropout(x, 0.1)
    values = out.unique().tolist()
    assert len(values) == 2
    assert values[0] == 0.0
    assert values[1] == pytest.approx(32768 / (32768 - 3277), rel=1e-6)
    assert abs(out.mean().item() - 1.0) < 0.003


def test_gradient_uses_forward_mask():
    torch.manual_seed(2)
    x = torch.ones(64, 64, requires_grad=True)
    out = cpu_dropout(x, 0.3)
    out.backward(torch.ones_like(out))
    assert torch.equal(x.grad, out.detach())


def test_same_seed_same_mask():
    torch.manual_seed(3)
    first = cpu_dropout(torch.ones(100, 100), 0.2)
    torch.manual_seed(3)
    second = cpu_dropout(torch.ones(100, 100), 0.2)
    assert torch.equal(first, second)


def test_dropout_module_modes():
    module = Dropout(0.5)
    x = torch.randn(10, 10)
    assert torch.equal(module.eval()(x), x)
    assert isinstance(module, torch.nn.Dropout)
    module.train()
    module.p = 0.0
    assert torch.equal(module(x), x)
    module.p = 1.0
    assert torch.equal(module(x), torch.zeros_like(x))


def attention_inputs(seed: int):
    generator = torch.Generator().manual_seed(seed)
    shapes = [(2, 4, 7, 8), (2, 4, 9, 8), (2, 4, 9, 8), (1, 4, 7, 9)]
    return [torch.randn(shape, generator=generator, requires_grad=True) for shape in shapes]


def test_attention_matches_pytorch_without_drops():
    ours_inputs = attention_inputs(4)
    reference_inputs = [tensor.detach().clone().requires_grad_() for tensor in ours_inputs]

    ours = attention_with_cpu_dropout(*ours_inputs, NEGLIGIBLE_RATE)
    reference = F.scaled_dot_product_attention(*reference_inputs[:3], attn_mask=reference_inputs[3], scale=1.0)
    ours.sum().backward()
    reference.sum().backward()

    assert (ours - reference).abs().max().item() < 1e-6
    for mine, theirs in zip(ours_inputs, reference_inputs):
        assert (mine.grad - theirs.grad).abs().max().item() < 1e-5


def test_attention_applies_dropout():
    query, key, value, bias = attention_inputs(5)
    torch.manual_seed(5)
    dropped = attention_with_cpu_dropout(query, key, value, bias, 0.5)
    plain = F.scaled_dot_product_attention(query, key, value, attn_mask=bias, scale=1.0)
    assert (dropped - plain).abs().max().item() > 1e-2


@pytest.mark.parametrize("variant", ["relu-tied", "gated-gelu-untied"])
def test_training_mode_matches_transformers(variant):
    hf_model, model = build_model_pair(variant, seed=11)
    set_dropout(model, NEGLIGIBLE_RATE)
    model.train()
    input_ids, attention_mask = random_batch(hf_model.config.vocab_size, [9, 6], seed=11)
    labels = torch.randint(3, hf_model.config.vocab_size, (2, 5), generator=torch.Generator().manual_seed(12))

    hf_loss = hf_model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
    loss = model(input_ids, attention_mask, labels=labels).loss
    hf_loss.backward()
    loss.backward()

    assert abs(hf_loss.item() - loss.item()) < 1e-5
    hf_grad = hf_model.encoder.block[0].layer[0].SelfAttention.k.weight.grad
    assert (hf_grad - model.encoder.blocks[0].self_attn.inner.k.weight.grad).abs().max().item() < 1e-5
    hf_bias_grad = hf_model.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight.grad
    assert (hf_bias_grad - model.encoder.relative_bias.weight.grad).abs().max().item() < 1e-5

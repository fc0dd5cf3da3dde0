"""A compact T5 encoder-decoder in plain PyTorch, numerically equal to transformers' T5.

The model owns four extension points that the parameter-efficient methods use, so that no method
has to patch attention code:

- `T5.kv_prefix`: a module whose `forward(batch_size)` returns a `PrefixKV` with extra keys and
  values per layer for encoder self-attention, decoder self-attention and decoder cross-attention.
  Prefix positions are always visible to every query and get no relative position bias.
- `T5.input_prompt`: a module whose `forward(batch_size)` returns embeddings of shape
  (batch, prompt_length, d_model) that are placed before the encoder input.
- `Sublayer.adapter`: a module called as `adapter(sublayer_input, sublayer_output)` on every
  attention and feed-forward sublayer; `sublayer_input` is the normalized input the sublayer saw.
- Plain `nn.Linear` projections (`q`, `k`, `v`, `o`, `wi`, `wi_0`, `wi_1`, `wo`) that a method can
  replace with an `nn.Linear` subclass without renaming the base weight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sumtune.model.config import T5Config

ENCODER_SELF = "encoder_self"
DECODER_SELF = "decoder_self"
DECODER_CROSS = "decoder_cross"
ATTENTION_KINDS = (ENCODER_SELF, DECODER_SELF, DECODER_CROSS)

KeyValue = tuple[Tensor, Tensor]


@dataclass
class PrefixKV:
    """Extra attention keys and values, each of shape (batch, num_heads, prefix_length, d_kv).

    Every entry is a list with one (key, value) pair per layer, or None when that attention
    kind gets no prefix.
    """

    encoder_self: list[KeyValue] | None = None
    decoder_self: list[KeyValue] | None = None
    decoder_cross: list[KeyValue] | None = None

    def for_kind(self, kind: str) -> list[KeyValue] | None:
        return getattr(self, kind)


@dataclass
class Seq2SeqOutput:
    logits: Tensor
    loss: Tensor | None = None
    encoder_hidden: Tensor | None = None


def mask_value(dtype: torch.dtype) -> float:
    """Return the additive mask value that transformers uses: the most negative finite number of `dtype`."""
    return torch.finfo(dtype).min


# Dropout masks are drawn as 15-bit integers, so drop probabilities are rounded to multiples of 2**-15.
MASK_BITS = 15


def dropout_mask(shape: torch.Size, p: float, device: torch.device) -> tuple[Tensor, float] | None:
    """Return a boolean keep-mask where each entry is True with probability 1 - p, and the matching scale.

    Each 64-bit draw of the generator gives four 15-bit integers, so the mask costs a quarter of
    the draws that `torch.bernoulli_` makes. The drop probability is rounded to a multiple of
    2**-15 (0.1 becomes 0.100006), and the scale uses the rounded value, so the expected output
    equals the input. Returns None when p rounds to 1, where every entry would be dropped.
    """
    levels = 2**MASK_BITS
    threshold = round(p * levels)
    if threshold >= levels:
        return None
    count = math.prod(shape)
    words = torch.empty((count + 3) // 4, dtype=torch.int64, device=device).random_()
    # int64 random_ draws from [0, 2**63), so the highest 16-bit lane of each word has a zero top
    # bit and the other three do not. Keeping the low 15 bits of every lane makes all four uniform.
    draws = words.view(torch.int16)[:count].bitwise_and_(levels - 1)
    keep = (draws >= threshold).view(shape)
    return keep, levels / (levels - threshold)


class _MaskAndScale(torch.autograd.Function):
    """Zero the entries where `keep` is False and scale the rest, in the forward and the backward pass.

    Written out because `x.mul(keep)` first converts the boolean mask to floats, which costs
    about as much as the multiplication. The backward saves the one-byte mask only.
    """

    @staticmethod
    def forward(ctx, x: Tensor, keep: Tensor, scale: float) -> Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return torch.where(keep, x, 0.0).mul_(scale)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        (keep,) = ctx.saved_tensors
        return torch.where(keep, grad, 0.0).mul_(ctx.scale), None, None


def cpu_dropout(x: Tensor, p: float) -> Tensor:
    """Apply inverted dropout to `x` with a mask from `dropout_mask`: zero entries, scale the rest by 1/(1-p)."""
    mask = dropout_mask(x.shape, p, x.device)
    if mask is None:
        return torch.zeros_like(x)
    keep, scale = mask
    return _MaskAndScale.apply(x, keep, scale)


class Dropout(nn.Dropout):
    """`nn.Dropout` with a faster mask on CPU; on other devices it calls PyTorch's fused kernel.

    A subclass, so code that finds dropout layers with `isinstance(module, nn.Dropout)` and sets
    `p` keeps working.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu" or self.p >= 1.0:
            return super().forward(x)
        return cpu_dropout(x, self.p)


class RMSNorm(nn.Module):
    """T5's layer norm: scale only, no mean subtraction and no bias, statistics in float32."""

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(variance + self.eps)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            x = x.to(self.weight.dtype)
        return self.weight * x


def activation_function(name: str):
    if name == "gelu_new":
        return lambda x: F.gelu(x, approximate="tanh")
    return {"relu": F.relu, "gelu": F.gelu, "silu": F.silu}[name]


class FeedForward(nn.Module):
    """ReLU feed-forward (original T5) or gated feed-forward (T5 v1.1, FLAN-T5)."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.gated = config.is_gated
        if self.gated:
            self.wi_0 = nn.Linear(config.d_model, config.d_ff, bias=False)
            self.wi_1 = nn.Linear(config.d_model, config.d_ff, bias=False)
        else:
            self.wi = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)
        self.act = activation_function(config.activation)
        self.dropout = Dropout(config.dropout_rate)

    def forward(self, x: Tensor) -> Tensor:
        if self.gated:
            hidden = self.act(self.wi_0(x)) * self.wi_1(x)
        else:
            hidden = self.act(self.wi(x))
        return self.wo(self.dropout(hidden))


def attention_with_cpu_dropout(query: Tensor, key: Tensor, value: Tensor, bias: Tensor, p: float) -> Tensor:
    """Compute unscaled softmax attention with dropout on the weights, for training on CPU.

    PyTorch's fused CPU attention has no dropout, so with dropout `scaled_dot_product_attention`
    takes its unfused path, which draws the mask with the slower `bernoulli_`. This is the same
    computation with the faster mask. The softmax runs in float32, as in transformers' T5, and
    needs no guard for fully masked rows because T5's mask value is finite.
    """
    scores = torch.matmul(query, key.transpose(-1, -2))
    scores += bias
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(scores.dtype)
    mask = dropout_mask(weights.shape, p, weights.device)
    if mask is None:
        return torch.matmul(torch.zeros_like(weights), value)
    keep, scale = mask
    # Scaling the values instead of the weights gives the same product and touches
    # length times d_kv numbers instead of length squared.
    return torch.matmul(torch.where(keep, weights, 0.0), value * scale)


class Attention(nn.Module):
    """Multi-head attention without score scaling, as in T5 (the scale is folded into the weights)."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.num_heads = config.num_heads
        self.d_kv = config.d_kv
        self.dropout = config.dropout_rate
        self.q = nn.Linear(config.d_model, config.inner_dim, bias=False)
        self.k = nn.Linear(config.d_model, config.inner_dim, bias=False)
        self.v = nn.Linear(config.d_model, config.inner_dim, bias=False)
        self.o = nn.Linear(config.inner_dim, config.d_model, bias=False)

    def split_heads(self, x: Tensor) -> Tensor:
        # (batch, length, heads * d_kv) -> (batch, heads, length, d_kv)
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.d_kv).transpose(1, 2)

    def key_value(self, states: Tensor) -> KeyValue:
        return self.split_heads(self.k(states)), self.split_heads(self.v(states))

    def attend(self, query_states: Tensor, key: Tensor, value: Tensor, bias: Tensor) -> Tensor:
        """Attend from `query_states` to `key`/`value`.

        `key` may have fewer rows than the queries when each group of `rows // key rows` consecutive
        query rows shares its keys, as the beams of one example share the encoder output in beam
        search. The group's queries are then stacked along the query length, so each example's keys
        and values are read once per step. `bias` must then not vary along the query length.
        """
        query = self.split_heads(self.q(query_states))
        rows, _, length, _ = query.shape
        groups = rows // key.shape[0]
        if groups > 1:
            # (examples * groups, heads, length, d_kv) -> (examples, heads, groups * length, d_kv)
            query = query.view(key.shape[0], groups, self.num_heads, length, self.d_kv).transpose(1, 2)
            query = query.reshape(key.shape[0], self.num_heads, groups * length, self.d_kv)
        dropout = self.dropout if self.training else 0.0
        if dropout > 0.0 and query.device.type == "cpu":
            out = attention_with_cpu_dropout(query, key, value, bias.to(query.dtype), dropout)
        else:
            out = F.scaled_dot_product_attention(
                query, key, value, attn_mask=bias.to(query.dtype), dropout_p=dropout, scale=1.0
            )
        if groups > 1:
            out = out.view(key.shape[0], self.num_heads, groups, length, self.d_kv).transpose(1, 2)
        # (batch, heads, length, d_kv) -> (batch, length, heads * d_kv)
        out = out.reshape(rows, self.num_heads, length, self.d_kv).transpose(1, 2).reshape(rows, length, -1)
        return self.o(out)


class Sublayer(nn.Module):
    """Pre-norm residual wrapper: `x + dropout(adapter(norm(x), inner(norm(x))))`."""

    def __init__(self, config: T5Config, inner: nn.Module):
        super().__init__()
        self.norm = RMSNorm(config.d_model, config.layer_norm_epsilon)
        self.inner = inner
        self.adapter: nn.Module | None = None
        self.dropout = Dropout(config.dropout_rate)

    def residual(self, x: Tensor, normed: Tensor, out: Tensor) -> Tensor:
        if self.adapter is not None:
            out = self.adapter(normed, out)
        return x + self.dropout(out)


class SelfAttentionSublayer(Sublayer):
    def __init__(self, config: T5Config):
        super().__init__(config, Attention(config))

    def forward(self, x: Tensor, bias: Tensor, prefix: KeyValue | None, cache: LayerCache | None) -> Tensor:
        normed = self.norm(x)
        key, value = self.inner.key_value(normed)
        if cache is not None:
            key, value = cache.append(key, value)
        elif prefix is not None:
            key = torch.cat([prefix[0], key], dim=2)
            value = torch.cat([prefix[1], value], dim=2)
        return self.residual(x, normed, self.inner.attend(normed, key, value, bias))


class CrossAttentionSublayer(Sublayer):
    def __init__(self, config: T5Config):
        super().__init__(config, Attention(config))

    def forward(self, x: Tensor, bias: Tensor, encoder_kv: KeyValue) -> Tensor:
        normed = self.norm(x)
        return self.residual(x, normed, self.inner.attend(normed, encoder_kv[0], encoder_kv[1], bias))


class FeedForwardSublayer(Sublayer):
    def __init__(self, config: T5Config):
        super().__init__(config, FeedForward(config))

    def forward(self, x: Tensor) -> Tensor:
        normed = self.norm(x)
        return self.residual(x, normed, self.inner(normed))


class Block(nn.Module):
    def __init__(self, config: T5Config, is_decoder: bool):
        super().__init__()
        self.self_attn = SelfAttentionSublayer(config)
        self.cross_attn = CrossAttentionSublayer(config) if is_decoder else None
        self.ffn = FeedForwardSublayer(config)


def relative_position_bucket(relative_position: Tensor, bidirectional: bool, num_buckets: int, max_distance: int) -> Tensor:
    """Map key-minus-query distances to buckets: exact below num_buckets/2 (per direction), log-spaced above.

    Follows the Mesh TensorFlow T5 definition, which transformers reproduces; distances beyond
    `max_distance` share the last bucket.
    """
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative_position > 0).long() * num_buckets
        distance = relative_position.abs()
    else:
        distance = -torch.clamp(relative_position, max=0)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    log_ratio = torch.log(distance.float() / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (log_ratio * (num_buckets - max_exact)).long()
    large = torch.clamp(large, max=num_buckets - 1)
    return buckets + torch.where(is_small, distance, large)


class Stack(nn.Module):
    """The encoder or the decoder: blocks, a shared relative position bias, and a final norm."""

    def __init__(self, config: T5Config, is_decoder: bool):
        super().__init__()
        self.config = config
        self.is_decoder = is_decoder
        num_layers = config.num_decoder_layers if is_decoder else config.num_layers
        self.blocks = nn.ModuleList(Block(config, is_decoder) for _ in range(num_layers))
        self.relative_bias = nn.Embedding(config.relative_attention_num_buckets, config.num_heads)
        self.final_norm = RMSNorm(config.d_model, config.layer_norm_epsilon)
        self.dropout = Dropout(config.dropout_rate)

    def position_bias(self, query_length: int, key_length: int, query_offset: int = 0) -> Tensor:
        """Return the bias of shape (1, heads, query_length, key_length); queries start at `query_offset`."""
        device = self.relative_bias.weight.device
        query_positions = torch.arange(query_length, device=device)[:, None] + query_offset
        key_positions = torch.arange(key_length, device=device)[None, :]
        buckets = relative_position_bucket(
            key_positions - query_positions,
            bidirectional=not self.is_decoder,
            num_buckets=self.config.relative_attention_num_buckets,
            max_distance=self.config.relative_attention_max_distance,
        )
        return self.relative_bias(buckets).permute(2, 0, 1).unsqueeze(0)


def padding_bias(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """Turn a (batch, length) 0/1 mask into an additive (batch, 1, 1, length) bias."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * mask_value(dtype)


def with_prefix_columns(bias: Tensor, prefix_length: int) -> Tensor:
    """Prepend `prefix_length` zero columns: prefix keys are visible and carry no position bias."""
    if prefix_length == 0:
        return bias
    zeros = bias.new_zeros(*bias.shape[:-1], prefix_length)
    return torch.cat([zeros, bias], dim=-1)


def prefix_length(prefixes: list[KeyValue] | None) -> int:
    return 0 if prefixes is None else prefixes[0][0].shape[2]


class LayerCache:
    """Decoder self-attention keys and values of one layer, preallocated for the whole generation."""

    def __init__(self, key: Tensor, value: Tensor, filled: int):
        self.key = key  # (batch, heads, prefix + max_length, d_kv)
        self.value = value
        self.filled = filled

    def append(self, key: Tensor, value: Tensor) -> KeyValue:
        end = self.filled + key.shape[2]
        self.key[:, :, self.filled : end] = key
        self.value[:, :, self.filled : end] = value
        self.filled = end
        return self.key[:, :, :end], self.value[:, :, :end]

    def reorder(self, index: Tensor) -> None:
        self.key[:, :, : self.filled] = self.key[index, :, : self.filled]
        self.value[:, :, : self.filled] = self.value[index, :, : self.filled]


@dataclass
class DecoderCache:
    """Everything the decoder reuses between generation steps.

    Cross-attention keys and values are computed once from the encoder output; self-attention keys
    and values grow by one position per step. `length` counts decoder tokens, not prefix positions.
    """

    layers: list[LayerCache]
    cross_kv: list[KeyValue]
    cross_bias: Tensor
    prefix_length: int
    length: int = 0
    position_table: Tensor | None = field(default=None, repr=False)

    def reorder(self, index: Tensor) -> None:
        """Reorder self-attention entries after beam search picks new beams.

        Cross-attention entries are left alone: beams of one example share the same encoder output,
        and beam search only permutes beams within an example.
        """
        for layer in self.layers:
            layer.reorder(index)


class Encoder(Stack):
    def __init__(self, config: T5Config):
        super().__init__(config, is_decoder=False)

    def forward(self, embeds: Tensor, mask: Tensor, prefixes: list[KeyValue] | None) -> Tensor:
        length = embeds.shape[1]
        bias = self.position_bias(length, length) + padding_bias(mask, embeds.dtype)
        bias = with_prefix_columns(bias, prefix_length(prefixes))
        hidden = self.dropout(embeds)
        for index, block in enumerate(self.blocks):
            prefix = prefixes[index] if prefixes is not None else None
            hidden = block.self_attn(hidden, bias, prefix, cache=None)
            hidden = block.ffn(hidden)
        return self.dropout(self.final_norm(hidden))


class Decoder(Stack):
    def __init__(self, config: T5Config):
        super().__init__(config, is_decoder=True)

    def cross_key_values(self, encoder_hidden: Tensor, prefixes: list[KeyValue] | None) -> list[KeyValue]:
        """Project the encoder output once per layer and prepend the cross-attention prefix."""
        key_values = []
        for index, block in enumerate(self.blocks):
            key, value = block.cross_attn.inner.key_value(encoder_hidden)
            if prefixes is not None:
                key = torch.cat([prefixes[index][0], key], dim=2)
                value = torch.cat([prefixes[index][1], value], dim=2)
            key_values.append((key, value))
        return key_values

    def self_attention_bias(self, query_length: int, offset: int, dtype: torch.dtype, table: Tensor | None) -> Tensor:
        """Causal bias for queries at positions offset..offset+query_length-1 over keys 0..offset+query_length-1."""
        key_length = offset + query_length
        if table is not None:
            bias = table[:, :, offset:key_length, :key_length]
        else:
            bias = self.position_bias(query_length, key_length, query_offset=offset)
        if query_length > 1:
            query_positions = torch.arange(query_length, device=bias.device)[:, None] + offset
            key_positions = torch.arange(key_length, device=bias.device)[None, :]
            future = (key_positions > query_positions).to(bias.dtype) * mask_value(bias.dtype)
            bias = bias + future
        return bias

    def forward(
        self,
        embeds: Tensor,
        cross_kv: list[KeyValue],
        cross_bias: Tensor,
        self_prefixes: list[KeyValue] | None = None,
        cache: DecoderCache | None = None,
        attention_mask: Tensor | None = None,
    ) -> Tensor:
        offset = cache.length if cache is not None else 0
        table = cache.position_table if cache is not None else None
        bias = self.self_attention_bias(embeds.shape[1], offset, embeds.dtype, table)
        if attention_mask is not None:
            bias = bias + padding_bias(attention_mask, embeds.dtype)
        bias = with_prefix_columns(bias, cache.prefix_length if cache is not None else prefix_length(self_prefixes))

        hidden = self.dropout(embeds)
        for index, block in enumerate(self.blocks):
            layer_cache = cache.layers[index] if cache is not None else None
            prefix = self_prefixes[index] if self_prefixes is not None else None
            hidden = block.self_attn(hidden, bias, prefix, layer_cache)
            hidden = block.cross_attn(hidden, cross_bias, cross_kv[index])
            hidden = block.ffn(hidden)
        if cache is not None:
            cache.length += embeds.shape[1]
        return self.dropout(self.final_norm(hidden))


@dataclass
class EncoderOutput:
    """Encoder states and the (batch, length) mask over them, soft-prompt positions included."""

    hidden: Tensor
    mask: Tensor


class T5(nn.Module):
    """T5 encoder-decoder with a language-modeling head (what transformers calls T5ForConditionalGeneration)."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.config = config
        self.shared = nn.Embedding(config.vocab_size, config.d_model)
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.lm_head = None if config.tie_word_embeddings else nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.kv_prefix: nn.Module | None = None
        self.input_prompt: nn.Module | None = None

    # -- building blocks used by training and generation -------------------------------------

    def prefixes(self, batch_size: int) -> PrefixKV:
        return self.kv_prefix(batch_size) if self.kv_prefix is not None else PrefixKV()

    def encode(self, input_ids: Tensor, attention_mask: Tensor, prefixes: PrefixKV | None = None) -> EncoderOutput:
        if prefixes is None:
            prefixes = self.prefixes(input_ids.shape[0])
        embeds = self.shared(input_ids)
        if self.input_prompt is not None:
            prompt = self.input_prompt(input_ids.shape[0]).to(embeds.dtype)  # (batch, prompt_length, d_model)
            embeds = torch.cat([prompt, embeds], dim=1)
            prompt_mask = attention_mask.new_ones(attention_mask.shape[0], prompt.shape[1])
            attention_mask = torch.cat([prompt_mask, attention_mask], dim=1)
        hidden = self.encoder(embeds, attention_mask, prefixes.encoder_self)
        return EncoderOutput(hidden, attention_mask)

    def cross_bias(self, encoder_mask: Tensor, prefixes: PrefixKV, dtype: torch.dtype) -> Tensor:
        return with_prefix_columns(padding_bias(encoder_mask, dtype), prefix_length(prefixes.decoder_cross))

    def lm_logits(self, hidden: Tensor) -> Tensor:
        if self.lm_head is None:
            # Tied embeddings: T5 rescales the decoder output by d_model ** -0.5 before the shared matrix.
            return F.linear(hidden * self.config.d_model**-0.5, self.shared.weight)
        return self.lm_head(hidden)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        decoder_input_ids: Tensor | None = None,
        labels: Tensor | None = None,
        decoder_attention_mask: Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> Seq2SeqOutput:
        """Teacher-forced forward pass; `decoder_input_ids` default to `labels` shifted right."""
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("pass decoder_input_ids or labels")
            decoder_input_ids = self.shift_right(labels)
        prefixes = self.prefixes(input_ids.shape[0])
        encoded = self.encode(input_ids, attention_mask, prefixes)
        cross_kv = self.decoder.cross_key_values(encoded.hidden, prefixes.decoder_cross)
        cross_bias = self.cross_bias(encoded.mask, prefixes, encoded.hidden.dtype)
        hidden = self.decoder(
            self.shared(decoder_input_ids), cross_kv, cross_bias, prefixes.decoder_self,
            attention_mask=decoder_attention_mask,
        )
        logits = self.lm_logits(hidden)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits.float().view(-1, logits.shape[-1]), labels.view(-1),
                ignore_index=-100, label_smoothing=label_smoothing,
            )
        return Seq2SeqOutput(logits=logits, loss=loss, encoder_hidden=encoded.hidden)

    def shift_right(self, labels: Tensor) -> Tensor:
        """Build decoder inputs: the start token, then the labels without the last one, -100 as padding."""
        start = labels.new_full((labels.shape[0], 1), self.config.decoder_start_token_id)
        shifted = torch.cat([start, labels[:, :-1]], dim=1)
        return shifted.masked_fill(shifted == -100, self.config.pad_token_id)

    def start_generation(self, encoded: EncoderOutput, prefixes: PrefixKV, max_length: int, num_beams: int = 1) -> DecoderCache:
        """Allocate the decoder cache for up to `max_length` decoder positions (start token included).

        `encoded` and `prefixes` cover the examples; the cache has `num_beams` decoder rows per
        example, consecutive. Cross-attention keys and values stay one per example, shared by its beams.
        """
        batch = encoded.hidden.shape[0] * num_beams
        config = self.config
        self_prefixes = prefixes.decoder_self
        if self_prefixes is not None and num_beams > 1:
            self_prefixes = [(k.repeat_interleave(num_beams, 0), v.repeat_interleave(num_beams, 0)) for k, v in self_prefixes]
        prefix_len = prefix_length(self_prefixes)
        dtype = encoded.hidden.dtype
        layers = []
        for index in range(config.num_decoder_layers):
            shape = (batch, config.num_heads, prefix_len + max_length, config.d_kv)
            key = torch.empty(shape, dtype=dtype, device=encoded.hidden.device)
            value = torch.empty_like(key)
            if self_prefixes is not None:
                key[:, :, :prefix_len] = self_prefixes[index][0]
                value[:, :, :prefix_len] = self_prefixes[index][1]
            layers.append(LayerCache(key, value, prefix_len))
        return DecoderCache(
            layers=layers,
            cross_kv=self.decoder.cross_key_values(encoded.hidden, prefixes.decoder_cross),
            cross_bias=self.cross_bias(encoded.mask, prefixes, dtype),
            prefix_length=prefix_len,
            position_table=self.decoder.position_bias(max_length, max_length).to(dtype),
        )

    def decode_step(self, decoder_input_ids: Tensor, cache: DecoderCache) -> Tensor:
        """Run the decoder on new tokens, appending to `cache`; return logits for those tokens."""
        hidden = self.decoder(self.shared(decoder_input_ids), cache.cross_kv, cache.cross_bias, cache=cache)
        return self.lm_logits(hidden)

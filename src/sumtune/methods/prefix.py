"""Prefix tuning (Li and Liang, 2021, "Prefix-Tuning: Optimizing Continuous Prompts for Generation").

In every layer, each enabled attention kind (encoder self-attention, decoder self-attention,
decoder cross-attention) gets `prefix_length` trained key and value vectors per head. Every query
can attend to them and they carry no relative position bias; `T5.kv_prefix` puts them in place.

The paper trains the prefix through a reparametrization: a smaller embedding table passed
through an MLP, because optimizing the prefix directly was unstable. The MLP is only a training
device, so checkpoints store the prefixes it produces, and a loaded checkpoint has plain prefixes.
With `reparametrize=True` the trainable count printed at the start of training therefore
includes the MLP, and the line also gives the smaller saved count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import partial

import torch
from torch import Tensor, nn

from sumtune.methods.base import (
    MethodConfig, MethodSpec, check_bool, check_choice, check_int, freeze, option, tiled_token_ids,
)
from sumtune.model.config import T5Config
from sumtune.model.t5 import ATTENTION_KINDS, DECODER_CROSS, DECODER_SELF, ENCODER_SELF, T5, PrefixKV

INITS = ("random", "text")


@dataclass
class PrefixConfig(MethodConfig):
    """Prefix tuning settings; the defaults put a 20-position prefix on all three attention kinds."""

    method = "prefix"

    prefix_length: int = option(20, "number of prefix positions per layer and attention kind")
    encoder_self: bool = option(True, "add a prefix to encoder self-attention")
    decoder_self: bool = option(True, "add a prefix to decoder self-attention")
    decoder_cross: bool = option(True, "add a prefix to decoder cross-attention (over the encoder output)")
    reparametrize: bool = option(
        True,
        "train the prefix through an embedding table and an MLP with one tanh hidden layer (Li and Liang's "
        "reparametrization); the MLP is folded into plain prefixes when saved",
    )
    hidden_size: int = option(512, "hidden width of the reparametrization MLP")
    init: str = option(
        "random",
        "prefix initialization: 'random', or 'text' for the keys and values that the frozen model computes "
        "for the tokens of init_text (plain prefixes only)",
    )
    init_text: str | None = option(None, "text whose activations initialize the prefix when init='text'")

    def kinds(self) -> tuple[str, ...]:
        """Return the enabled attention kinds, in `ATTENTION_KINDS` order."""
        return tuple(kind for kind in ATTENTION_KINDS if getattr(self, kind) is True)

    def validate(self) -> list[str]:
        problems: list[str] = []
        check_int(problems, "prefix", "prefix_length", self.prefix_length, 1)
        for kind in ATTENTION_KINDS:
            check_bool(problems, "prefix", kind, getattr(self, kind))
        check_bool(problems, "prefix", "reparametrize", self.reparametrize)
        check_int(problems, "prefix", "hidden_size", self.hidden_size, 1)
        check_choice(problems, "prefix", "init", self.init, INITS)
        if not self.kinds():
            problems.append("prefix: encoder_self, decoder_self and decoder_cross are all false; enable at least one")
        if self.init == "text":
            if not isinstance(self.init_text, str) or not self.init_text.strip():
                problems.append(f"prefix.init='text' needs a non-empty init_text, got {self.init_text!r}")
            if self.reparametrize is True:
                problems.append(
                    "prefix.init='text' sets the prefixes directly, which the reparametrization MLP cannot "
                    "start from; set reparametrize=false or init='random'"
                )
        elif self.init_text is not None:
            problems.append(f"prefix.init_text is set but init={self.init!r}; set init='text' to use the text")
        return problems


def layer_count(model_config: T5Config, kind: str) -> int:
    return model_config.num_layers if kind == ENCODER_SELF else model_config.num_decoder_layers


class PrefixMLP(nn.Module):
    """The reparametrization: embedding (P, d_model) -> linear -> tanh -> linear (P, layers * 2 * heads * d_kv)."""

    def __init__(self, prefix_length: int, d_model: int, hidden_size: int, out_features: int):
        super().__init__()
        self.embedding = nn.Parameter(torch.randn(prefix_length, d_model))
        self.mlp = nn.Sequential(nn.Linear(d_model, hidden_size), nn.Tanh(), nn.Linear(hidden_size, out_features))

    def forward(self) -> Tensor:
        return self.mlp(self.embedding)


class PrefixTuning(nn.Module):
    """The `T5.kv_prefix` module: per-layer key/value prefixes for each enabled attention kind.

    A prefix table has shape (layers, 2, heads, prefix_length, d_kv), where index 0 of the second
    axis selects keys and 1 selects values. Head size is `d_kv`, which need not be d_model / num_heads.
    """

    def __init__(self, model_config: T5Config, config: PrefixConfig):
        super().__init__()
        self.prefix_length = config.prefix_length
        self.num_heads = model_config.num_heads
        self.d_kv = model_config.d_kv
        self.layers = {kind: layer_count(model_config, kind) for kind in config.kinds()}
        if config.reparametrize:
            self.mlps = nn.ModuleDict({
                kind: PrefixMLP(config.prefix_length, model_config.d_model, config.hidden_size,
                                layers * 2 * model_config.inner_dim)
                for kind, layers in self.layers.items()
            })
        else:
            # N(0, 1) matches the scale of keys and values in a T5 initialized with the reference scales.
            self.prefixes = nn.ParameterDict({
                kind: nn.Parameter(torch.randn(layers, 2, self.num_heads, self.prefix_length, self.d_kv))
                for kind, layers in self.layers.items()
            })

    @property
    def reparametrized(self) -> bool:
        return hasattr(self, "mlps")

    def tables(self) -> dict[str, Tensor]:
        """Return each enabled kind's prefix table of shape (layers, 2, heads, prefix_length, d_kv)."""
        if not self.reparametrized:
            return dict(self.prefixes.items())
        tables = {}
        for kind, layers in self.layers.items():
            flat = self.mlps[kind]()  # (prefix_length, layers * 2 * heads * d_kv)
            table = flat.view(self.prefix_length, layers, 2, self.num_heads, self.d_kv)
            tables[kind] = table.permute(1, 2, 3, 0, 4)
        return tables

    def forward(self, batch_size: int) -> PrefixKV:
        result = PrefixKV()
        for kind, table in self.tables().items():
            # (layers, 2, heads, P, d_kv) -> (layers, 2, batch, heads, P, d_kv), a view without copies
            expanded = table.unsqueeze(2).expand(-1, -1, batch_size, -1, -1, -1)
            setattr(result, kind, [(expanded[layer, 0], expanded[layer, 1]) for layer in range(table.shape[0])])
        return result


@torch.no_grad()
def word_activations(model: T5, token_ids: list[int], kinds: tuple[str, ...]) -> dict[str, Tensor]:
    """Return the keys and values the frozen model computes for `token_ids`, as prefix tables.

    The tokens are the encoder input and, unshifted, the decoder input, so position i of every
    table belongs to token i. Cross-attention keys and values come from the encoder output.
    Dropout is off while the activations are taken.
    """
    device = model.shared.weight.device
    ids = torch.tensor([token_ids], device=device)
    sublayers = {
        ENCODER_SELF: [block.self_attn for block in model.encoder.blocks],
        DECODER_SELF: [block.self_attn for block in model.decoder.blocks],
        DECODER_CROSS: [block.cross_attn for block in model.decoder.blocks],
    }
    captured: dict[tuple[str, int, int], Tensor] = {}

    def store(key: tuple[str, int, int], module: nn.Module, inputs: tuple, output: Tensor) -> None:
        # (1, P, heads * d_kv) -> (heads, P, d_kv)
        captured[key] = output[0].view(len(token_ids), model.config.num_heads, model.config.d_kv).transpose(0, 1)

    hooks = []
    for kind in kinds:
        for layer, sublayer in enumerate(sublayers[kind]):
            for slot, projection in enumerate((sublayer.inner.k, sublayer.inner.v)):
                hooks.append(projection.register_forward_hook(partial(store, (kind, layer, slot))))
    was_training = model.training
    model.eval()
    try:
        model(ids, torch.ones_like(ids), decoder_input_ids=ids)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)

    return {
        kind: torch.stack([
            torch.stack([captured[(kind, layer, 0)], captured[(kind, layer, 1)]])
            for layer in range(len(sublayers[kind]))
        ])
        for kind in kinds
    }


def apply(model: T5, config: PrefixConfig, tokenizer=None) -> None:
    freeze(model)
    activations = None
    if config.init == "text":
        token_ids = tiled_token_ids(tokenizer, config.init_text, config.prefix_length, "prefix")
        activations = word_activations(model, token_ids, config.kinds())
    reference = model.shared.weight
    with torch.device(reference.device):
        module = PrefixTuning(model.config, config).to(reference.dtype)
    if activations is not None:
        with torch.no_grad():
            for kind, table in activations.items():
                module.prefixes[kind].copy_(table)
    model.kv_prefix = module


@torch.no_grad()
def prefix_state_dict(model: T5, config: PrefixConfig) -> dict[str, Tensor]:
    """Return the prefix tables under the names of plain prefixes, folding the MLP if there is one."""
    return {f"kv_prefix.prefixes.{kind}": table.detach() for kind, table in model.kv_prefix.tables().items()}


def saved_form(config: PrefixConfig) -> PrefixConfig:
    """Return the config of what a checkpoint holds: plain prefixes, filled by the loader."""
    return replace(config, reparametrize=False, init="random", init_text=None)


SPEC = MethodSpec(
    name="prefix",
    config_class=PrefixConfig,
    apply=apply,
    parameter_pattern=re.compile(r"^kv_prefix\."),
    state_dict=prefix_state_dict,
    load_config=saved_form,
)

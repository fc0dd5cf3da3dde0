"""Bottleneck adapters: down-projection, non-linearity, up-projection, placed on `Sublayer.adapter`.

Placements:
- `houlsby` (Houlsby et al., 2019): a sequential adapter on the output of every attention sublayer
  and of every feed-forward sublayer. Houlsby et al. put one after each multi-head attention, and
  a T5 decoder block has two of them, so decoder cross-attention gets an adapter too. (AdapterHub
  leaves cross-attention out by default; its Houlsby counts on T5 are lower by one adapter per
  decoder layer.) Houlsby et al. also train the layer norms; here the norms stay frozen.
- `pfeiffer` (Pfeiffer et al., 2021): one sequential adapter on the output of every feed-forward sublayer.
- `parallel` (He et al., 2022, "Towards a Unified View of Parameter-Efficient Transfer Learning"):
  the adapter reads the sublayer's normalized input, runs beside the feed-forward sublayer, and its
  output, times a scaling factor (4 in He et al.), is added to the sublayer's. He et al. found the
  feed-forward position the best use of the parameters, so only feed-forward sublayers get one.

The up-projection starts at zero, so a new adapter is the identity and the model's outputs are
unchanged until training moves it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sumtune.methods.base import MethodConfig, MethodSpec, check_choice, check_int, freeze, option
from sumtune.model.t5 import T5

PLACEMENTS = ("houlsby", "pfeiffer", "parallel")
NON_LINEARITIES = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "tanh": torch.tanh,
}
DEFAULT_PARALLEL_SCALING = 4.0


@dataclass
class AdapterConfig(MethodConfig):
    """Bottleneck adapter settings; give either bottleneck_size or reduction_factor, not both."""

    method = "adapter"

    placement: str = option(
        "houlsby",
        "'houlsby' (after every attention and feed-forward sublayer, decoder cross-attention included), "
        "'pfeiffer' (after every feed-forward sublayer) or 'parallel' (beside every feed-forward sublayer, scaled)",
    )
    bottleneck_size: int | None = option(None, "width of the bottleneck; leave unset to use reduction_factor")
    reduction_factor: int | None = option(16, "bottleneck width as d_model // reduction_factor")
    non_linearity: str = option("relu", "activation between the projections: " + ", ".join(NON_LINEARITIES))
    scaling: float | None = option(
        None, f"factor on the parallel adapter's output (placement='parallel' only; default {DEFAULT_PARALLEL_SCALING})"
    )

    def validate(self) -> list[str]:
        problems: list[str] = []
        check_choice(problems, "adapter", "placement", self.placement, PLACEMENTS)
        check_choice(problems, "adapter", "non_linearity", self.non_linearity, tuple(NON_LINEARITIES))
        if (self.bottleneck_size is None) == (self.reduction_factor is None):
            problems.append(
                f"adapter: set exactly one of bottleneck_size ({self.bottleneck_size!r}) and reduction_factor "
                f"({self.reduction_factor!r}); set the other to null"
            )
        if self.bottleneck_size is not None:
            check_int(problems, "adapter", "bottleneck_size", self.bottleneck_size, 1)
        if self.reduction_factor is not None:
            check_int(problems, "adapter", "reduction_factor", self.reduction_factor, 1)
        if self.scaling is not None:
            if self.placement != "parallel":
                problems.append(f"adapter.scaling={self.scaling!r} applies only to placement='parallel'; remove it")
            elif isinstance(self.scaling, bool) or not isinstance(self.scaling, (int, float)):
                problems.append(f"adapter.scaling must be a number, got {self.scaling!r}")
        return problems

    def bottleneck(self, d_model: int) -> int:
        return self.bottleneck_size if self.bottleneck_size is not None else max(1, d_model // self.reduction_factor)


class Bottleneck(nn.Module):
    def __init__(self, d_model: int, bottleneck: int, non_linearity: str):
        super().__init__()
        self.down = nn.Linear(d_model, bottleneck)
        self.up = nn.Linear(bottleneck, d_model)
        self.non_linearity = non_linearity
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def project(self, x: Tensor) -> Tensor:
        return self.up(NON_LINEARITIES[self.non_linearity](self.down(x)))


class SequentialAdapter(Bottleneck):
    """Houlsby and Pfeiffer adapters: output + up(f(down(output)))."""

    def forward(self, sublayer_input: Tensor, sublayer_output: Tensor) -> Tensor:
        return sublayer_output + self.project(sublayer_output)


class ParallelAdapter(Bottleneck):
    """He et al.'s parallel adapter: output + scaling * up(f(down(normalized input)))."""

    def __init__(self, d_model: int, bottleneck: int, non_linearity: str, scaling: float):
        super().__init__(d_model, bottleneck, non_linearity)
        self.scaling = scaling

    def forward(self, sublayer_input: Tensor, sublayer_output: Tensor) -> Tensor:
        return sublayer_output + self.scaling * self.project(sublayer_input)


def adapted_sublayers(model: T5, placement: str) -> list[nn.Module]:
    """Return the sublayers that get an adapter under `placement`."""
    sublayers = []
    for stack in (model.encoder, model.decoder):
        for block in stack.blocks:
            if placement == "houlsby":
                sublayers.append(block.self_attn)
                if block.cross_attn is not None:
                    sublayers.append(block.cross_attn)
            sublayers.append(block.ffn)
    return sublayers


def apply(model: T5, config: AdapterConfig, tokenizer=None) -> None:
    freeze(model)
    d_model = model.config.d_model
    bottleneck = config.bottleneck(d_model)
    reference = model.shared.weight
    for sublayer in adapted_sublayers(model, config.placement):
        with torch.device(reference.device):
            if config.placement == "parallel":
                scaling = DEFAULT_PARALLEL_SCALING if config.scaling is None else float(config.scaling)
                adapter = ParallelAdapter(d_model, bottleneck, config.non_linearity, scaling)
            else:
                adapter = SequentialAdapter(d_model, bottleneck, config.non_linearity)
        sublayer.adapter = adapter.to(reference.dtype)


SPEC = MethodSpec(
    name="adapter",
    config_class=AdapterConfig,
    apply=apply,
    parameter_pattern=re.compile(r"\.adapter\."),
)

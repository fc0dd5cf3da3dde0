"""Full fine-tuning: every base weight is trained. The baseline the other methods are measured against."""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import Tensor

from sumtune.methods.base import MethodConfig, MethodSpec
from sumtune.model.t5 import T5
from sumtune.model.weights import base_state_dict


@dataclass
class FullConfig(MethodConfig):
    """Full fine-tuning has no settings of its own; optimizer settings belong to the training config."""

    method = "full"


def apply(model: T5, config: FullConfig, tokenizer=None) -> None:
    model.requires_grad_(True)


def full_state_dict(model: T5, config: FullConfig) -> dict[str, Tensor]:
    return base_state_dict(model)


SPEC = MethodSpec(
    name="full",
    config_class=FullConfig,
    apply=apply,
    parameter_pattern=re.compile(r""),
    state_dict=full_state_dict,
)

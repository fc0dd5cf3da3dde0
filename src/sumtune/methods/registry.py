"""The method registry and the functions that work on any method through it."""

from __future__ import annotations

from torch import Tensor

from sumtune.errors import ConfigError
from sumtune.methods import adapter, full, lora, prefix, prompt
from sumtune.methods.base import MethodConfig, MethodSpec, matching_state_dict, report_parameters
from sumtune.model.t5 import T5

METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in (prefix.SPEC, prompt.SPEC, adapter.SPEC, lora.SPEC, full.SPEC)}

# Set on a model by apply_method. Methods other than `full` add modules that a second method would clash with.
APPLIED_ATTRIBUTE = "applied_method"


def method_spec(name: str) -> MethodSpec:
    if name not in METHODS:
        raise ConfigError([f"unknown method {name!r}; expected one of: {', '.join(METHODS)}"])
    return METHODS[name]


def method_config_class(name: str) -> type[MethodConfig]:
    """Return the config dataclass of method `name` ("prefix", "prompt", "adapter", "lora" or "full")."""
    return method_spec(name).config_class


def spec_for_config(config: MethodConfig) -> MethodSpec:
    for spec in METHODS.values():
        if type(config) is spec.config_class:
            return spec
    raise ConfigError([f"{type(config).__name__} is not a method config; build one with method_config_class(name)"])


def apply_method(model: T5, config: MethodConfig, *, tokenizer=None, report: bool = True) -> None:
    """Freeze the base (except for `full`), add the method's modules, and print the trainable count.

    Raises ConfigError listing every invalid setting before the model is touched.
    """
    spec = spec_for_config(config)
    problems = config.validate()
    if problems:
        raise ConfigError(problems)
    applied = getattr(model, APPLIED_ATTRIBUTE, None)
    if applied not in (None, "full"):
        raise ConfigError([
            f"this model already has the {applied!r} method applied; load a fresh base model to apply {spec.name!r}"
        ])
    spec.apply(model, config, tokenizer)
    # New modules start in training mode. Giving them the model's mode keeps, for instance, LoRA
    # dropout off in a model that is in eval mode.
    model.train(model.training)
    setattr(model, APPLIED_ATTRIBUTE, spec.name)
    if report:
        saved = sum(tensor.numel() for tensor in trainable_state_dict(model, config).values())
        report_parameters(model, saved=saved)


def trainable_state_dict(model: T5, config: MethodConfig) -> dict[str, Tensor]:
    """Return the weights a checkpoint of this method stores: the method's own (for `full`, the whole base)."""
    spec = spec_for_config(config)
    if spec.state_dict is not None:
        return spec.state_dict(model, config)
    return matching_state_dict(model, spec.parameter_pattern)

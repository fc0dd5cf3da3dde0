"""Shared parts of every method: the config base class, the registry entry type and parameter counting.

A method is a config dataclass, an `apply(model, config, tokenizer)` function that adds the
method's modules to a `T5`, and a regular expression that names its parameters. Nothing here
branches on the method; the differences live in each method's module.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from torch import Tensor, nn

from sumtune.errors import ConfigError

logger = logging.getLogger("sumtune.methods")


def option(default: Any, help: str) -> Any:
    """Declare a config field with its help text, which the command line shows for that option."""
    return field(default=default, metadata={"help": help})


@dataclass
class MethodConfig:
    """Base class of the method configs: dictionary round trip and validation that lists every problem."""

    method: ClassVar[str] = ""

    def validate(self) -> list[str]:
        """Return every problem with the field values; an empty list means the config is usable."""
        return []

    def to_dict(self) -> dict[str, Any]:
        return {item.name: list(value) if isinstance(value, tuple) else value
                for item in fields(self) for value in [getattr(self, item.name)]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MethodConfig:
        """Build a config from a dictionary (JSON or YAML) and raise ConfigError listing every problem."""
        if not isinstance(data, Mapping):
            raise ConfigError([f"the {cls.method} config must be a mapping of option names to values, got {data!r}"])
        known = {item.name for item in fields(cls)}
        problems = [
            f"unknown {cls.method} option {key!r}; expected one of: {', '.join(sorted(known)) or '(none)'}"
            for key in data if key not in known
        ]
        values = {key: tuple(value) if isinstance(value, list) else value for key, value in data.items() if key in known}
        config = cls(**values)
        problems.extend(config.validate())
        if problems:
            raise ConfigError(problems)
        return config

    @classmethod
    def help(cls) -> dict[str, str]:
        """Return the help text of every field, keyed by field name."""
        return {item.name: item.metadata.get("help", "") for item in fields(cls)}


@dataclass(frozen=True)
class MethodSpec:
    """One registry entry.

    `parameter_pattern` matches the state-dict names of the method's own parameters (for `full`,
    every name). `state_dict` returns what a checkpoint stores, which can differ from the trained
    parameters (prefix tuning folds its reparametrization MLP). `load_config` turns a saved config
    into the one used to rebuild the saved form before its weights are loaded.
    """

    name: str
    config_class: type[MethodConfig]
    apply: Callable[[nn.Module, Any, Any], None]
    parameter_pattern: re.Pattern
    state_dict: Callable[[nn.Module, Any], dict[str, Tensor]] | None = None
    load_config: Callable[[Any], Any] = lambda config: config


def matching_state_dict(model: nn.Module, pattern: re.Pattern) -> dict[str, Tensor]:
    return {name: tensor for name, tensor in model.state_dict().items() if pattern.search(name)}


def freeze(model: nn.Module) -> None:
    """Stop gradients for every parameter present now; the method's modules, added after, stay trainable."""
    model.requires_grad_(False)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """Return (trainable, total) parameter counts; tied weights count once."""
    trainable = total = 0
    for parameter in model.parameters():  # parameters() yields a shared tensor once
        total += parameter.numel()
        if parameter.requires_grad:
            trainable += parameter.numel()
    return trainable, total


def format_parameter_report(trainable: int, total: int, saved: int | None = None) -> str:
    line = f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {100 * trainable / total:.4f}"
    if saved is not None and saved != trainable:
        line += (
            f" || saved params: {saved:,} (the trainable count includes modules used only during "
            "training, such as the prefix reparametrization MLP, which are folded away when saving)"
        )
    return line


def report_parameters(model: nn.Module, saved: int | None = None) -> str:
    """Log and print the trainable parameter count and percentage, and return the line."""
    line = format_parameter_report(*count_parameters(model), saved=saved)
    logger.info(line)
    print(line, flush=True)
    return line


# Small validation helpers: each appends a message that names the field, the value and what is expected.

def check_int(problems: list[str], method: str, name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        problems.append(f"{method}.{name} must be an integer >= {minimum}, got {value!r}")


def check_choice(problems: list[str], method: str, name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        problems.append(f"{method}.{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def check_bool(problems: list[str], method: str, name: str, value: Any) -> None:
    if not isinstance(value, bool):
        problems.append(f"{method}.{name} must be true or false, got {value!r}")


def tiled_token_ids(tokenizer: Any, text: str, length: int, method: str) -> list[int]:
    """Tokenize `text` without special tokens and repeat or cut the ids to exactly `length` positions."""
    if tokenizer is None:
        raise ConfigError([f"{method}.init='text' needs a tokenizer; pass tokenizer= to apply_method"])
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if not ids:
        raise ConfigError([f"{method}.init_text={text!r} produces no tokens; give a text with at least one word"])
    repeats = -(-length // len(ids))  # ceiling division
    return (ids * repeats)[:length]

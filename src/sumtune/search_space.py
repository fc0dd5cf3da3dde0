"""Search spaces for `sumtune tune`: built-in ranges per method, and the YAML format that overrides them.

A search space is a mapping from knob name to a range, a list of choices or a fixed value. Top-level
keys are `TrainConfig` fields; the method's own knobs sit under `method_options`, as they do in a
training config:

    use_defaults: true                       # merge over the built-in space (default: true)
    learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}
    batch_size: {choices: [8, 16, 32]}
    max_steps: {low: 200, high: 2000, step: 200}
    warmup_steps: 100                        # a plain value is fixed, not searched
    method_options:
      r: {low: 4, high: 64, log: true}
      alpha: {choices: [16, 32, 64]}

A range has `low` and `high` (both inclusive) and optionally `log` (sample on a log scale, needs
`low > 0`) or `step` (a grid from `low`). Its type is int when both bounds are integers and float
otherwise, unless `type: int` or `type: float` sets it. A list of choices is `{choices: [...]}`
with strings, numbers, booleans or null. PyYAML reads `1e-4` (no dot) as a string, so numeric strings
are accepted for bounds.

This module parses the format and checks it against the field types of the config classes.
`sumtune.tune` also checks each bound with the configs' own `validate()`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sumtune.errors import ConfigError

# Keys that name what is trained, not how, so a study cannot vary them.
NOT_SEARCHABLE = frozenset({"method", "model", "data", "output_dir", "method_options"})
SPEC_KEYS = frozenset({"type", "low", "high", "log", "step", "choices"})
KINDS = ("int", "float", "categorical")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")

# Ranges shared by every method. Learning rates are per method below, because prompt tuning
# needs rates two to three orders of magnitude above full fine-tuning.
COMMON_SPACE: dict[str, Any] = {
    "batch_size": {"choices": [4, 8, 16]},
    "max_steps": {"low": 200, "high": 2000, "step": 200},
}

# Ranges around the settings reported in each method's paper:
# prefix: Li and Liang (2021) used lr 5e-5 to 8e-5 and prefixes of 10 (table-to-text) to
#   200 (summarization) tokens.
# prompt: Lester et al. (2021) used lr 0.3 with Adafactor and found 20 to 100 tokens best.
# adapter: Houlsby et al. (2019) searched lr 1e-4 to 1e-3 and bottlenecks of 8, 64 and 256.
# lora: Hu et al. (2021) used lr 2e-4 to 5e-4 and ranks 1 to 64, with alpha a small multiple
#   of the rank.
# full: T5 fine-tuning commonly uses lr 1e-4 to 3e-4 with AdamW.
METHOD_SPACES: dict[str, dict[str, Any]] = {
    "prefix": {
        "learning_rate": {"low": 1e-5, "high": 1e-2, "log": True},
        "method_options": {"prefix_length": {"low": 5, "high": 200, "log": True}},
    },
    "prompt": {
        "learning_rate": {"low": 1e-3, "high": 0.5, "log": True},
        "method_options": {"prompt_length": {"low": 5, "high": 150, "log": True}},
    },
    "adapter": {
        "learning_rate": {"low": 1e-5, "high": 3e-3, "log": True},
        # The adapter takes either a bottleneck size or a reduction factor, so the search fixes
        # the factor to null and varies the size.
        "method_options": {
            "reduction_factor": None,
            "bottleneck_size": {"low": 8, "high": 256, "log": True},
        },
    },
    "lora": {
        "learning_rate": {"low": 1e-5, "high": 5e-3, "log": True},
        "method_options": {
            "r": {"choices": [2, 4, 8, 16, 32, 64]},
            "alpha": {"choices": [8, 16, 32, 64]},
        },
    },
    "full": {
        "learning_rate": {"low": 1e-5, "high": 1e-3, "log": True},
    },
}


@dataclass(frozen=True)
class Knob:
    """One searched hyperparameter: an int or float range, or a list of choices."""

    name: str
    scope: Literal["train", "method"]
    kind: Literal["int", "float", "categorical"]
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def param_name(self, method: str) -> str:
        """Name of the Optuna parameter: the field name, or `METHOD.NAME` for a method knob."""
        return self.name if self.scope == "train" else f"{method}.{self.name}"

    def suggest(self, trial: Any, method: str) -> Any:
        """Draw a value for this knob from an Optuna trial."""
        name = self.param_name(method)
        if self.kind == "categorical":
            return trial.suggest_categorical(name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(name, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)

    def bounds(self) -> list[Any]:
        """Values that `validate()` must accept for the whole range to be valid."""
        return list(self.choices) if self.kind == "categorical" else [self.low, self.high]

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "categorical":
            return {"choices": list(self.choices)}
        output: dict[str, Any] = {"type": self.kind, "low": self.low, "high": self.high}
        if self.log:
            output["log"] = True
        if self.step is not None:
            output["step"] = self.step
        return output


@dataclass
class SearchSpace:
    """Searched knobs and fixed values of one method's study."""

    method: str
    knobs: list[Knob] = field(default_factory=list)
    fixed_train: dict[str, Any] = field(default_factory=dict)
    fixed_method: dict[str, Any] = field(default_factory=dict)

    def sample(self, trial: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """Draw one configuration: (TrainConfig overrides, method option overrides)."""
        train = dict(self.fixed_train)
        method = dict(self.fixed_method)
        for knob in self.knobs:
            target = train if knob.scope == "train" else method
            target[knob.name] = knob.suggest(trial, self.method)
        return train, method

    def reference_values(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Return overrides with every knob at its first bound, a configuration that checks can validate."""
        train = dict(self.fixed_train)
        method = dict(self.fixed_method)
        for knob in self.knobs:
            target = train if knob.scope == "train" else method
            target[knob.name] = knob.bounds()[0]
        return train, method

    def values_from_params(self, params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Rebuild the overrides of a finished trial from its Optuna parameters."""
        train = dict(self.fixed_train)
        method = dict(self.fixed_method)
        for knob in self.knobs:
            name = knob.param_name(self.method)
            if name in params:
                target = train if knob.scope == "train" else method
                target[knob.name] = params[name]
        return train, method

    def to_dict(self) -> dict[str, Any]:
        """Return the space in the YAML format, with `use_defaults: false` so that it is complete by itself."""
        output: dict[str, Any] = {"use_defaults": False, **self.fixed_train}
        method_options: dict[str, Any] = dict(self.fixed_method)
        for knob in self.knobs:
            target = output if knob.scope == "train" else method_options
            target[knob.name] = knob.to_dict()
        if method_options:
            output["method_options"] = method_options
        return output


def default_space_dict(method: str) -> dict[str, Any]:
    """Return the built-in search space of `method` in the YAML format."""
    merged: dict[str, Any] = {**COMMON_SPACE, "method_options": {}}
    for key, value in METHOD_SPACES.get(method, {}).items():
        if key == "method_options":
            merged["method_options"].update(value)
        else:
            merged[key] = value
    return merged


def load_space_file(path: str | Path) -> dict[str, Any]:
    """Read a search space YAML file into a mapping, with a clear error for unreadable files."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"search space file {path} not found; pass an existing YAML file"])
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError([f"search space file {path} is not valid YAML: {error}"]) from error
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            [f"search space file {path} contains a {type(data).__name__}, expected a mapping of "
             "knob names to ranges such as 'learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}'"]
        )
    return data


def build_search_space(
    method: str,
    overrides: Mapping[str, Any] | None,
    train_types: Mapping[str, Any],
    method_types: Mapping[str, Any],
    *,
    fixed_train: Mapping[str, Any] | None = None,
    fixed_method: Mapping[str, Any] | None = None,
    source: str = "search space",
) -> SearchSpace:
    """Merge `overrides` over the built-in space of `method` and check every entry.

    `train_types` and `method_types` map the field names of `TrainConfig` and of the method's
    config class to their type hints. `fixed_train` and `fixed_method` hold values set on the
    command line: each removes the built-in knob of the same name, and a knob of the same name
    in `overrides` is an error. Raises ConfigError listing every problem at once.
    """
    overrides = dict(overrides or {})
    fixed_train = dict(fixed_train or {})
    fixed_method = dict(fixed_method or {})
    problems: list[str] = []

    use_defaults = overrides.pop("use_defaults", True)
    if not isinstance(use_defaults, bool):
        problems.append(f"{source}: use_defaults is {use_defaults!r}, expected true or false")
        use_defaults = True
    user_options = overrides.pop("method_options", {}) or {}
    if not isinstance(user_options, dict):
        problems.append(
            f"{source}: method_options is a {type(user_options).__name__}, expected a mapping "
            "of the method's knobs to ranges"
        )
        user_options = {}

    for prefix, entries, fixed in (("", overrides, fixed_train), ("method_options.", user_options, fixed_method)):
        for name in sorted(set(entries) & set(fixed)):
            problems.append(
                f"{source}: {prefix}{name} is set both on the command line ({fixed[name]!r}) and in "
                "the search space; remove one of them"
            )

    defaults = default_space_dict(method) if use_defaults else {"method_options": {}}
    train_entries = {
        name: value for name, value in defaults.items() if name != "method_options" and name not in fixed_train
    }
    train_entries.update(overrides)
    method_entries = {
        name: value for name, value in defaults["method_options"].items() if name not in fixed_method
    }
    method_entries.update(user_options)

    space = SearchSpace(method=method)
    for name, value in train_entries.items():
        _add_entry(space, "train", name, value, train_types, source, problems)
    for name, value in method_entries.items():
        _add_entry(space, "method", name, value, method_types, f"{source}: method_options", problems)
    if problems:
        raise ConfigError(problems)
    return space


def field_types(config_class: type) -> dict[str, Any]:
    """Map each field of a dataclass to its resolved type hint (`Any` when it cannot be resolved)."""
    try:
        hints = typing.get_type_hints(config_class)
    except (NameError, TypeError):
        hints = {}
    return {item.name: hints.get(item.name, Any) for item in dataclasses.fields(config_class)}


def _add_entry(
    space: SearchSpace,
    scope: Literal["train", "method"],
    name: Any,
    value: Any,
    types_by_name: Mapping[str, Any],
    where: str,
    problems: list[str],
) -> None:
    if not isinstance(name, str) or name in NOT_SEARCHABLE:
        problems.append(
            f"{where}: {name!r} cannot be searched; a study trains one method on one model and "
            "data set, so set those with --method, --model and --data"
        )
        return
    if name not in types_by_name:
        problems.append(_unknown_knob(name, scope, space.method, types_by_name, where))
        return
    if not isinstance(value, dict):
        # A plain value is fixed for every trial; validate() checks it with the other fields.
        target = space.fixed_train if scope == "train" else space.fixed_method
        target[name] = value
        return

    before = len(problems)
    knob = _parse_knob(name, scope, value, f"{where}: {name}", problems)
    if knob is not None and len(problems) == before:
        _check_knob_type(knob, types_by_name[name], f"{where}: {name}", problems)
    if len(problems) == before and knob is not None:
        space.knobs.append(knob)


def _unknown_knob(
    name: str, scope: str, method: str, types_by_name: Mapping[str, Any], where: str
) -> str:
    owner = "TrainConfig" if scope == "train" else f"the {method} method's options"
    message = f"{where}: unknown knob {name!r}, not a field of {owner}"
    close = difflib.get_close_matches(name, list(types_by_name), n=1)
    if close:
        message += f"; did you mean {close[0]!r}?"
    if scope == "train":
        message += " (method knobs go under method_options)"
    return message


def _parse_knob(
    name: str, scope: Literal["train", "method"], spec: dict, where: str, problems: list[str]
) -> Knob | None:
    unknown = sorted(str(key) for key in set(spec) - SPEC_KEYS)
    if unknown:
        problems.append(
            f"{where}: unknown key(s) {', '.join(unknown)}; a range has low, high and optionally "
            "log, step and type, a list of choices has choices"
        )
        return None
    kind = spec.get("type")
    if kind is not None and kind not in KINDS:
        problems.append(f"{where}: type is {kind!r}, expected one of {', '.join(KINDS)}")
        return None

    if "choices" in spec:
        return _parse_choices(name, scope, spec, kind, where, problems)
    if "low" not in spec or "high" not in spec:
        problems.append(
            f"{where}: expected low and high (a range) or choices (a list), got "
            f"{', '.join(map(str, spec)) or 'an empty mapping'}"
        )
        return None
    return _parse_range(name, scope, spec, kind, where, problems)


def _parse_choices(name, scope, spec, kind, where, problems) -> Knob | None:
    choices = spec["choices"]
    extra = sorted(set(spec) - {"choices", "type"})
    if extra:
        problems.append(f"{where}: choices cannot be combined with {', '.join(extra)}")
        return None
    if kind not in (None, "categorical"):
        problems.append(f"{where}: a list of choices needs type categorical, got {kind!r}")
        return None
    if not isinstance(choices, list) or not choices:
        problems.append(f"{where}: choices must be a non-empty list, got {choices!r}")
        return None
    for choice in choices:
        if choice is not None and not isinstance(choice, bool | int | float | str):
            problems.append(
                f"{where}: choice {choice!r} is a {type(choice).__name__}; Optuna accepts only "
                "strings, numbers, booleans and null"
            )
            return None
    if len({repr(choice) for choice in choices}) != len(choices):
        problems.append(f"{where}: choices {choices!r} contain duplicates")
        return None
    return Knob(name=name, scope=scope, kind="categorical", choices=tuple(choices))


def _parse_range(name, scope, spec, kind, where, problems) -> Knob | None:
    errors: list[str] = []
    low = _as_number(spec["low"])
    high = _as_number(spec["high"])
    step = _as_number(spec["step"]) if spec.get("step") is not None else None
    log = spec.get("log", False)
    for label, raw, number in (("low", spec["low"], low), ("high", spec["high"], high)):
        if number is None:
            errors.append(f"{where}: {label} is {raw!r}, expected a number")
    if spec.get("step") is not None and step is None:
        errors.append(f"{where}: step is {spec['step']!r}, expected a number")
    if not isinstance(log, bool):
        errors.append(f"{where}: log is {log!r}, expected true or false")
    if kind == "categorical":
        errors.append(f"{where}: type categorical needs choices, not low and high")
    if errors:
        problems.extend(errors)
        return None

    if kind is None:
        integral = all(isinstance(value, int) for value in (low, high, step or 1))
        kind = "int" if integral else "float"
    if kind == "int":
        for label, value in (("low", low), ("high", high), ("step", step)):
            if value is not None and not float(value).is_integer():
                errors.append(f"{where}: type int needs whole numbers, but {label} is {value!r}")
        if errors:
            problems.extend(errors)
            return None
        low, high = int(low), int(high)
        step = int(step) if step is not None else None
    else:
        low, high = float(low), float(high)
        step = float(step) if step is not None else None

    if not low < high:
        errors.append(
            f"{where}: invalid range, low ({low!r}) must be below high ({high!r}); "
            "use a plain value to fix a knob"
        )
    if log and low <= 0:
        errors.append(f"{where}: log scale needs low > 0, got low = {low!r}")
    if log and step is not None:
        errors.append(f"{where}: log and step cannot be combined; remove one of them")
    if step is not None and step <= 0:
        errors.append(f"{where}: step must be positive, got {step!r}")
    if errors:
        problems.extend(errors)
        return None
    return Knob(name=name, scope=scope, kind=kind, low=low, high=high, log=log, step=step)


def _as_number(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value if math.isfinite(value) else None
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        text = value.strip()
        number = float(text)
        is_integer_text = re.fullmatch(r"[+-]?\d+", text) is not None
        return int(text) if is_integer_text else number
    return None


def _accepted(hint: Any) -> tuple[set[type], tuple[Any, ...] | None] | None:
    """Return (scalar types, literal values) a field accepts, or None when any value may do."""
    if hint is Any:
        return None
    origin = typing.get_origin(hint)
    if origin is Literal:
        return set(), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        accepted: set[type] = set()
        literals: list[Any] = []
        for argument in typing.get_args(hint):
            if argument is type(None):
                accepted.add(type(None))
                continue
            inner = _accepted(argument)
            if inner is None:
                return None
            accepted |= inner[0]
            literals.extend(inner[1] or ())
        return accepted, tuple(literals) or None
    if hint in (bool, int, float, str):
        return {hint}, None
    return set(), None  # containers and other classes


def _check_knob_type(knob: Knob, hint: Any, where: str, problems: list[str]) -> None:
    accepted = _accepted(hint)
    if accepted is None:
        return
    scalar_types, literals = accepted
    type_name = getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
    if not scalar_types and not literals:
        problems.append(
            f"{where}: the field has type {type_name}, which cannot be searched; "
            "give a plain value to fix it instead"
        )
        return
    if knob.kind == "categorical":
        for choice in knob.choices:
            if not _value_fits(choice, scalar_types, literals):
                problems.append(
                    f"{where}: choice {choice!r} does not match the field type {type_name}"
                )
        return
    if knob.kind == "float" and float not in scalar_types:
        problems.append(
            f"{where}: a float range does not match the field type {type_name}; "
            "use whole-number bounds or type: int"
        )
    if knob.kind == "int" and not scalar_types & {int, float}:
        problems.append(
            f"{where}: a numeric range does not match the field type {type_name}; use choices"
        )


def _value_fits(value: Any, scalar_types: set[type], literals: tuple[Any, ...] | None) -> bool:
    if literals and any(value == literal and type(value) is type(literal) for literal in literals):
        return True
    if value is None:
        return type(None) in scalar_types
    if isinstance(value, bool):
        return bool in scalar_types
    if isinstance(value, int):
        return bool(scalar_types & {int, float})
    if isinstance(value, float):
        return float in scalar_types
    return type(value) in scalar_types

"""Training configuration: the `TrainConfig` dataclass, its validation, YAML files and presets.

Each field carries its help text and an example value in `metadata`. The `sumtune train`
command line builds one option per field from them, so the help is written once. Values come
in layers, later ones winning: a preset (`src/sumtune/presets/NAME.yaml`), a `--config FILE`,
then command-line flags. `validate()` returns every invalid value at once, and `train()` raises
them together as one `ConfigError`.

This module imports neither torch nor transformers, so `sumtune --help` stays fast. Method
options are checked against the method's config class, which `validate()` imports on demand.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from sumtune.errors import ConfigError

# The names registered in `sumtune.methods.METHODS`; a test keeps the two in step. They are
# repeated here so that the command line can list them without importing torch.
METHOD_NAMES = ("prefix", "prompt", "adapter", "lora", "full")
LR_SCHEDULERS = ("linear", "cosine", "constant")
PRECISIONS = ("fp32", "bf16")
ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")
# Keys of a run's config.yaml that describe the run rather than configure it; reading the file
# back skips them.
RUN_METADATA_KEYS = ("base_model", "sumtune_version")


def setting(default: Any, help: str, example: Any = None, *, choices: tuple | None = None,
            metavar: str | None = None) -> Any:
    """Declare a config field with the help text and example that `sumtune train --help` shows."""
    metadata = {"help": help, "example": example, "choices": choices, "metavar": metavar}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Everything one training run needs; the resolved copy is saved as `OUTPUT_DIR/config.yaml`."""

    # -- what to train -------------------------------------------------------------------------
    method: str | None = setting(None, "parameter-efficient method: " + ", ".join(METHOD_NAMES), "lora",
                                 choices=METHOD_NAMES)
    model: str | None = setting(None, "base model: a Hugging Face hub id or a local T5 directory", "t5-small",
                                metavar="ID_OR_DIR")
    data: str | None = setting(
        None,
        "training data: cnn_dailymail (Hugging Face hub), a JSONL/CSV/Parquet file, a directory with "
        "train/validation/test files, or train=FILE,validation=FILE",
        "articles.jsonl",
        metavar="SOURCE",
    )
    output_dir: str | None = setting(None, "run folder for checkpoints, logs, metrics and the trained adapter",
                                     "runs/t5-small-lora", metavar="DIR")
    method_options: dict[str, Any] = setting(
        {}, "options of the method's config class, such as {r: 8} for lora", {"r": 8}
    )

    # -- data ------------------------------------------------------------------------------------
    text_column: str = setting("article", "column that holds the article text", "document")
    summary_column: str = setting("highlights", "column that holds the reference summary", "summary")
    source_prefix: str = setting(
        "summarize: ",
        "text put before every article, at training and at inference (T5 was pre-trained with "
        "'summarize: ')",
        "'summarize: '",
    )
    max_source_length: int = setting(512, "articles are cut to this many tokens, prefix included", 512)
    max_target_length: int = setting(128, "reference summaries are cut to this many tokens", 128)
    max_train_samples: int | None = setting(None, "use only the first N training examples (default: all)", 1000)
    max_eval_samples: int | None = setting(
        None, "use only the first N validation examples (default: all); 0 turns evaluation off", 200
    )
    validation_size: float = setting(
        0.1,
        "examples held out for validation when the data has no validation split (a single file): a "
        "fraction below 1, or a count of at least 1",
        0.05,
    )
    strict: bool = setting(False, "reject rows with an empty article or summary instead of skipping them")

    # -- optimization ----------------------------------------------------------------------------
    learning_rate: float = setting(3e-4, "peak learning rate of AdamW", 1e-3)
    lr_scheduler: str = setting(
        "linear", "learning-rate schedule after warmup: linear or cosine decay to 0, or constant", "cosine",
        choices=LR_SCHEDULERS,
    )
    warmup_steps: int = setting(0, "optimizer steps of linear warmup from 0 to the peak learning rate", 500)
    warmup_ratio: float = setting(0.0, "warmup as a fraction of all optimizer steps (when warmup_steps is 0)", 0.06)
    batch_size: int = setting(8, "training examples per batch on each process", 16)
    gradient_accumulation_steps: int = setting(1, "batches whose gradients are summed into one optimizer step", 4)
    epochs: float = setting(3.0, "passes over the training data; fractions allowed (ignored when max_steps is set)", 1.5)
    max_steps: int | None = setting(None, "optimizer steps to train; overrides epochs", 2000)
    weight_decay: float = setting(
        0.0, "AdamW weight decay, applied to matrices only (not to biases or norm scales)", 0.01
    )
    adam_beta1: float = setting(0.9, "AdamW beta1", 0.9)
    adam_beta2: float = setting(0.999, "AdamW beta2", 0.98)
    adam_epsilon: float = setting(1e-8, "AdamW epsilon", 1e-6)
    max_grad_norm: float = setting(1.0, "clip the gradient norm to this value; 0 turns clipping off", 1.0)
    label_smoothing: float = setting(0.0, "label smoothing of the training cross-entropy", 0.1)
    dropout_rate: float | None = setting(
        None, "dropout probability of the base model (default: keep the checkpoint's value)", 0.0
    )
    seed: int = setting(42, "random seed for method initialization, data order and dropout", 1)
    precision: str = setting(
        "fp32", "fp32, or bf16 autocast (fp16 is not offered: T5 activations overflow in fp16)", "bf16",
        choices=PRECISIONS,
    )

    # -- evaluation and generation ---------------------------------------------------------------
    eval_steps: int = setting(
        500, "evaluate (generate + ROUGE) every N optimizer steps; 0 evaluates only at the end", 200
    )
    eval_batch_size: int = setting(8, "validation examples per generation batch", 16)
    num_beams: int = setting(4, "beam width when generating summaries (1 is greedy)", 1)
    max_new_tokens: int = setting(128, "maximum generated tokens per summary", 64)
    min_new_tokens: int = setting(0, "minimum generated tokens per summary", 10)
    length_penalty: float = setting(2.0, "beam search: hypothesis score = log-probability / length ** this", 1.0)
    no_repeat_ngram_size: int = setting(3, "never repeat an n-gram of this size in a summary; 0 turns it off", 0)
    beam_early_stopping: bool = setting(
        True, "beam search: stop as soon as num_beams hypotheses are finished"
    )
    best_metric: str = setting(
        "rougeLsum", "ROUGE score that selects the best checkpoint (saved to OUTPUT_DIR/adapter)", "rouge2",
        choices=ROUGE_KEYS,
    )
    early_stopping_patience: int = setting(
        0, "stop after this many evaluations without a better best_metric; 0 turns it off", 3
    )

    # -- checkpoints, logs and limits -------------------------------------------------------------
    save_steps: int = setting(500, "write a resumable checkpoint every N optimizer steps (0: only at the end)", 200)
    save_total_limit: int = setting(2, "keep only the newest N checkpoints in OUTPUT_DIR/checkpoints", 3)
    logging_steps: int = setting(10, "log loss, learning rate, grad norm and tokens/s every N optimizer steps", 50)
    tensorboard: bool = setting(True, "also write TensorBoard logs to OUTPUT_DIR/tensorboard when it is installed")
    progress_bar: bool = setting(True, "show a progress bar on stderr")
    max_train_minutes: float | None = setting(None, "stop training after this many minutes of wall time", 30)
    resume: bool = setting(False, "continue from the newest checkpoint in OUTPUT_DIR/checkpoints")
    overwrite_output_dir: bool = setting(False, "replace an existing run in OUTPUT_DIR instead of stopping")

    # -- validation ------------------------------------------------------------------------------

    def validate(self) -> list[str]:
        """Return every problem with the values, each naming the field, the value and what is expected."""
        problems = type_problems(self)
        # Fields of the wrong type are checked no further. The remaining checks run on a copy with
        # the defaults in their place, so each fault is reported once.
        wrong_type = [name for name in field_types() if any(problem.startswith(name + " ") for problem in problems)]
        checked = dataclasses.replace(self, **{name: _default(name) for name in wrong_type})
        problems.extend(problem for problem in checked._required_problems()
                        if not any(problem.startswith(name + " ") for name in wrong_type))
        problems.extend(checked._range_problems())
        problems.extend(checked._combination_problems())
        problems.extend(checked._method_problems())
        return problems

    def _required_problems(self) -> list[str]:
        problems = []
        for name in ("method", "model", "data", "output_dir"):
            value = getattr(self, name)
            if value is None or not str(value).strip():
                problems.append(f"{name} ({flag_name(name)}) is required")
        return problems

    def _range_problems(self) -> list[str]:
        problems: list[str] = []

        def at_least(name: str, minimum: float, allow_none: bool = False) -> None:
            value = getattr(self, name)
            if value is None and allow_none:
                return
            if value < minimum:
                problems.append(f"{name} ({flag_name(name)}) must be at least {minimum}, got {value}")

        def greater_than(name: str, bound: float) -> None:
            value = getattr(self, name)
            if not value > bound or not math.isfinite(value):
                problems.append(f"{name} ({flag_name(name)}) must be a finite number above {bound}, got {value}")

        def between(name: str, low: float, high: float, high_inclusive: bool = False) -> None:
            value = getattr(self, name)
            if value is None:
                return
            ok = low <= value <= high if high_inclusive else low <= value < high
            if not ok:
                closing = "]" if high_inclusive else ")"
                problems.append(f"{name} ({flag_name(name)}) must be in [{low}, {high}{closing}, got {value}")

        for name in ("max_source_length", "max_target_length", "batch_size", "gradient_accumulation_steps",
                     "eval_batch_size", "num_beams", "max_new_tokens", "save_total_limit", "logging_steps"):
            at_least(name, 1)
        for name in ("warmup_steps", "min_new_tokens", "no_repeat_ngram_size", "eval_steps", "save_steps",
                     "early_stopping_patience"):
            at_least(name, 0)
        at_least("max_train_samples", 1, allow_none=True)
        at_least("max_eval_samples", 0, allow_none=True)
        at_least("max_steps", 1, allow_none=True)
        greater_than("learning_rate", 0.0)
        greater_than("epochs", 0.0)
        greater_than("adam_epsilon", 0.0)
        if self.max_train_minutes is not None:
            greater_than("max_train_minutes", 0.0)
        between("warmup_ratio", 0.0, 1.0)
        between("adam_beta1", 0.0, 1.0)
        between("adam_beta2", 0.0, 1.0)
        between("label_smoothing", 0.0, 1.0)
        between("dropout_rate", 0.0, 1.0)
        between("weight_decay", 0.0, 1.0, high_inclusive=True)
        if self.max_grad_norm < 0 or not math.isfinite(self.max_grad_norm):
            problems.append(f"max_grad_norm (--max-grad-norm) must be 0 (off) or positive, got {self.max_grad_norm}")
        if not math.isfinite(self.length_penalty):
            problems.append(f"length_penalty (--length-penalty) must be a finite number, got {self.length_penalty}")
        if not (0 < self.validation_size < 1 or (self.validation_size >= 1 and float(self.validation_size).is_integer())):
            problems.append(
                f"validation_size (--validation-size) must be a fraction in (0, 1) or a whole count of at least 1, "
                f"got {self.validation_size}"
            )
        for name, allowed in (("lr_scheduler", LR_SCHEDULERS), ("best_metric", ROUGE_KEYS)):
            if getattr(self, name) not in allowed:
                problems.append(
                    f"{name} ({flag_name(name)}) must be one of {', '.join(allowed)}, got {getattr(self, name)!r}"
                )
        problems.extend(precision_problems(self.precision))
        return problems

    def _combination_problems(self) -> list[str]:
        problems = []
        if self.warmup_steps > 0 and self.warmup_ratio > 0:
            problems.append(
                f"warmup_steps ({self.warmup_steps}) and warmup_ratio ({self.warmup_ratio}) are both set; set only one"
            )
        if self.min_new_tokens > self.max_new_tokens >= 1:
            problems.append(
                f"min_new_tokens ({self.min_new_tokens}) must not exceed max_new_tokens ({self.max_new_tokens})"
            )
        if self.early_stopping_patience > 0 and self.max_eval_samples == 0:
            problems.append(
                "early_stopping_patience needs evaluation, but max_eval_samples is 0 (evaluation off); "
                "set max_eval_samples to a positive count or patience to 0"
            )
        if self.resume and self.overwrite_output_dir:
            problems.append("resume and overwrite_output_dir contradict each other; pass only one")
        return problems

    def _method_problems(self) -> list[str]:
        if self.method is None:
            return []
        if self.method not in METHOD_NAMES:
            suggestion = difflib.get_close_matches(str(self.method), METHOD_NAMES, n=1)
            hint = f" (did you mean {suggestion[0]!r}?)" if suggestion else ""
            return [f"method (--method) must be one of {', '.join(METHOD_NAMES)}, got {self.method!r}{hint}"]
        if not isinstance(self.method_options, Mapping):
            return [f"method_options must be a mapping of option names to values, got {self.method_options!r}"]
        try:
            self.method_config()
        except ConfigError as error:
            return list(error.problems)
        return []

    # -- derived objects -------------------------------------------------------------------------

    def method_config(self) -> Any:
        """Build the method's config object from `method_options`; raise ConfigError listing its problems."""
        from sumtune.methods import method_config_class

        return method_config_class(self.method).from_dict(coerce_method_options(self.method, self.method_options))

    def generation_config(self) -> Any:
        """Return the `GenerationConfig` used to generate summaries during evaluation."""
        from sumtune.evaluate import generation_config

        return generation_config(self.to_dict())

    @property
    def evaluation_enabled(self) -> bool:
        return self.max_eval_samples != 0

    # -- serialization ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as plain YAML/JSON values, in declaration order."""
        return {item.name: _plain(getattr(self, item.name)) for item in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> TrainConfig:
        """Build a config from a mapping, converting numeric strings. Raise ConfigError on unknown keys.

        Values of the wrong type are kept as given, so that `validate()` reports them. Unknown keys
        are reported here, with the closest field name when one is similar.
        """
        if not isinstance(data, Mapping):
            raise ConfigError([f"{source}: expected a mapping of option names to values, got {type(data).__name__}"])
        known = {item.name: item for item in fields(cls)}
        problems = []
        values = {}
        for key, value in data.items():
            if key in RUN_METADATA_KEYS:
                continue
            if key not in known:
                problems.append(f"{source}: unknown option {key!r}{_suggestion(str(key), known)}")
                continue
            values[key] = coerce_value(value, field_types()[key])
        if problems:
            raise ConfigError(problems)
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """Read a YAML file of TrainConfig fields (a preset, a --config file or a run's config.yaml)."""
        return cls.from_dict(read_yaml_mapping(path), source=str(path))

    def to_yaml(self, extra: Mapping[str, Any] | None = None) -> str:
        """Return the config as YAML text, with `extra` keys (such as run metadata) appended."""
        import yaml

        data = self.to_dict()
        if extra:
            data.update({key: _plain(value) for key, value in extra.items()})
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)


# ---------------------------------------------------------------------------------------------
# Types and coercion
# ---------------------------------------------------------------------------------------------


def field_types() -> dict[str, Any]:
    """Return the resolved type hint of every TrainConfig field."""
    return typing.get_type_hints(TrainConfig)


def flag_name(name: str) -> str:
    """Return the command-line flag of a config field, such as --learning-rate."""
    return "--" + name.replace("_", "-")


def base_type(hint: Any) -> tuple[Any, bool]:
    """Split `X | None` into (X, True); other hints return (hint, False)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        members = [member for member in typing.get_args(hint) if member is not type(None)]
        optional = len(members) < len(typing.get_args(hint))
        if len(members) == 1:
            return members[0], optional
        return hint, optional
    return hint, False


def coerce_value(value: Any, hint: Any) -> Any:
    """Convert strings from YAML or the command line to the field's type when they parse cleanly.

    PyYAML reads `3e-4` (no dot) as a string, and command-line values arrive as strings, so
    numbers, booleans and null are parsed here. A value that does not parse is returned
    unchanged for `validate()` to report.
    """
    target, optional = base_type(hint)
    if not isinstance(value, str):
        if target is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value
    text = value.strip()
    if optional and text.lower() in ("none", "null", "~"):
        return None
    try:
        if target is bool:
            lowered = text.lower()
            if lowered in ("true", "yes", "on", "1"):
                return True
            if lowered in ("false", "no", "off", "0"):
                return False
            return value
        if target is int:
            number = float(text)
            return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else value
        if target is float:
            return float(text)
    except ValueError:
        return value
    return value


def coerce_method_options(method: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Convert string values of method options to the types of the method's config fields."""
    from sumtune.methods import method_config_class

    config_class = method_config_class(method)
    hints = typing.get_type_hints(config_class)
    return {key: coerce_value(value, hints[key]) if key in hints else value for key, value in options.items()}


def type_problems(config: TrainConfig) -> list[str]:
    """Return a problem for each field whose value does not have the declared type."""
    problems = []
    for name, hint in field_types().items():
        value = getattr(config, name)
        target, optional = base_type(hint)
        if value is None and optional:
            continue
        if not _is_instance(value, target):
            expected = _type_words(target) + (" or null" if optional else "")
            problems.append(f"{name} ({flag_name(name)}) must be {expected}, got {value!r}")
        elif isinstance(value, float) and not math.isfinite(value) and name != "max_grad_norm":
            problems.append(f"{name} ({flag_name(name)}) must be a finite number, got {value!r}")
    return problems


def _is_instance(value: Any, target: Any) -> bool:
    if target is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if target is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if typing.get_origin(target) is dict:
        return isinstance(value, Mapping)
    return isinstance(value, target)


def _type_words(target: Any) -> str:
    if typing.get_origin(target) is dict:
        return "a mapping"
    return {int: "a whole number", float: "a number", str: "a string", bool: "true or false"}.get(
        target, getattr(target, "__name__", str(target))
    )


def _default(name: str) -> Any:
    item = next(item for item in fields(TrainConfig) if item.name == name)
    return item.default_factory() if item.default_factory is not dataclasses.MISSING else item.default


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    return value


def _suggestion(name: str, known: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else f"; known options are listed by `sumtune train --help`"


def precision_problems(precision: Any) -> list[str]:
    if precision in PRECISIONS:
        return []
    if str(precision).lower() in ("fp16", "float16", "half"):
        return [
            f"precision {precision!r} is not supported: T5 activations exceed the float16 range (65504) and "
            "the loss turns to inf/NaN; use --precision bf16 (same range as fp32) or fp32"
        ]
    return [f"precision (--precision) must be one of {', '.join(PRECISIONS)}, got {precision!r}"]


# ---------------------------------------------------------------------------------------------
# YAML files, presets and layering
# ---------------------------------------------------------------------------------------------


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML file that must hold one mapping; an empty file is an empty mapping."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"config file {path} not found; pass an existing YAML file"])
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError([f"config file {path} is not valid YAML: {error}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"config file {path} must hold a mapping of option names to values, "
                           f"got a {type(data).__name__}"])
    return data


def preset_names() -> list[str]:
    """Return the names of the bundled presets, such as t5-small-lora."""
    folder = resources.files("sumtune") / "presets"
    return sorted(item.name[: -len(".yaml")] for item in folder.iterdir() if item.name.endswith(".yaml"))


def preset_path(name: str) -> Path:
    """Return the file of a bundled preset; raise ConfigError naming the presets that exist."""
    names = preset_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError([f"unknown preset {name!r}{hint}; available presets: {', '.join(names)}"])
    return Path(str(resources.files("sumtune") / "presets" / f"{name}.yaml"))


def merge_layers(layers: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge config mappings, later ones winning; `method_options` merge key by key.

    When a later layer names a different method, the method options of earlier layers are
    dropped, because they belong to the other method's config class.
    """
    merged: dict[str, Any] = {}
    for layer in layers:
        layer = dict(layer)
        if "method" in layer and layer["method"] != merged.get("method") and "method" in merged:
            merged.pop("method_options", None)
        options = layer.pop("method_options", None)
        merged.update(layer)
        if options is not None:
            if not isinstance(options, Mapping):
                raise ConfigError([f"method_options must be a mapping of option names to values, got {options!r}"])
            merged["method_options"] = {**merged.get("method_options", {}), **options}
    return merged


def resolve_config(
    *,
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    resume_from_run: bool = False,
) -> TrainConfig:
    """Build a TrainConfig from a preset, a YAML file and overrides (in rising priority).

    With `resume_from_run`, the saved `config.yaml` of the run in the overrides' (or file's)
    `output_dir` sits between the preset and the file, so `--resume --output-dir DIR` alone
    continues a run with its own settings.
    """
    layers: list[Mapping[str, Any]] = []
    if preset is not None:
        layers.append(read_yaml_mapping(preset_path(preset)))
    file_layer = read_yaml_mapping(config_file) if config_file is not None else {}
    overrides = dict(overrides or {})
    if resume_from_run:
        output_dir = overrides.get("output_dir") or file_layer.get("output_dir")
        for layer in layers:
            output_dir = output_dir or layer.get("output_dir")
        saved = Path(str(output_dir)) / "config.yaml" if output_dir else None
        if saved is not None and saved.is_file():
            layers.append({key: value for key, value in read_yaml_mapping(saved).items()
                           if key not in RUN_METADATA_KEYS and key != "resume"})
    layers.append(file_layer)
    layers.append(overrides)
    return TrainConfig.from_dict(merge_layers(layers))


def cli_fields() -> list[dataclasses.Field]:
    """Return the fields that get a command-line option (all but method_options)."""
    return [item for item in fields(TrainConfig) if item.name != "method_options"]

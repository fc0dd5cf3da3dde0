"""Summarize text with a base model, a method checkpoint or a training run.

`Summarizer.load` takes exactly one of a model (hub id or directory), a method checkpoint
directory (`adapter_config.json` + weights) or a run directory written by `sumtune train`, whose
`adapter/` folder contains the checkpoint. A run's `config.yaml` supplies the default source prefix,
maximum source length and generation settings, so that a run summarizes new text the way it was
evaluated during training.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sumtune.errors import CheckpointError, ConfigError, DataError, SumtuneError
from sumtune.model.generate import GenerationConfig, generate

logger = logging.getLogger(__name__)

DEFAULT_SOURCE_PREFIX = "summarize: "
DEFAULT_MAX_SOURCE_LENGTH = 512
DEFAULT_BATCH_SIZE = 8
# The evaluation defaults of `sumtune train` (TrainConfig), which are the summarization settings of
# the original T5 checkpoints, so that `summarize` and `evaluate` agree when no option is given.
DEFAULT_GENERATION = GenerationConfig(
    num_beams=4, max_new_tokens=128, min_new_tokens=0, length_penalty=2.0, no_repeat_ngram_size=3, early_stopping=True
)
RUN_CONFIG_FILE = "config.yaml"
RUN_ADAPTER_DIR = "adapter"
GENERATION_FIELDS = tuple(item.name for item in dataclasses.fields(GenerationConfig))
# config.yaml keys (TrainConfig fields) that differ from the GenerationConfig field they set.
RUN_KEY_ALIASES = {"early_stopping": "beam_early_stopping"}


@dataclass
class RunDefaults:
    """Inference settings read from a run's `config.yaml`; None where the file does not set one."""

    source_prefix: str | None = None
    max_source_length: int | None = None
    batch_size: int | None = None
    generation: dict[str, Any] = field(default_factory=dict)


def read_run_defaults(run_dir: str | Path) -> RunDefaults:
    """Read the source prefix, maximum source length, batch size and generation settings of a run.

    The keys are TrainConfig fields at the top level of `config.yaml`: `source_prefix`,
    `max_source_length`, `eval_batch_size`, the GenerationConfig field names and
    `beam_early_stopping`. A missing file or key leaves the setting None.
    """
    import yaml

    path = Path(run_dir) / RUN_CONFIG_FILE
    if not path.is_file():
        logger.info("%s not found; using the default inference settings", path)
        return RunDefaults()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError([f"{path} is not valid YAML: {error}"]) from error
    if data is None:
        return RunDefaults()
    if not isinstance(data, Mapping):
        raise ConfigError([f"{path} must contain a mapping of settings, got {type(data).__name__}"])

    defaults = RunDefaults(
        source_prefix=data.get("source_prefix"),
        max_source_length=data.get("max_source_length"),
        batch_size=data.get("eval_batch_size"),
    )
    for name in GENERATION_FIELDS:
        value = data.get(RUN_KEY_ALIASES.get(name, name), data.get(name))
        if value is not None:
            defaults.generation[name] = value
    return defaults


def resolve_device(device: str | None):
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as error:
        raise ConfigError([f"invalid device {device!r} ({error}); use cpu, cuda or cuda:N"]) from error


class Summarizer:
    """A T5 model with its tokenizer and the inference defaults that go with it."""

    def __init__(
        self,
        model,
        tokenizer,
        *,
        source_prefix: str = DEFAULT_SOURCE_PREFIX,
        max_source_length: int = DEFAULT_MAX_SOURCE_LENGTH,
        generation_config: GenerationConfig | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        method_config: Any = None,
        device: str | None = None,
    ):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.source_prefix = source_prefix
        self.max_source_length = max_source_length
        self.generation_config = generation_config if generation_config is not None else DEFAULT_GENERATION
        self.batch_size = batch_size
        self.method_config = method_config

    # -- loading ---------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        model: str | None = None,
        *,
        adapter: str | Path | None = None,
        run: str | Path | None = None,
        base_model: str | None = None,
        allow_pickle: bool = False,
        device: str | None = None,
    ) -> Summarizer:
        """Load from exactly one of `model` (hub id or directory), `adapter` (method checkpoint) or `run`.

        `base_model` replaces the base model named in a method checkpoint. `allow_pickle` permits
        `pytorch_model.bin` weights for `model` only; method checkpoints load the base model through
        `sumtune.methods`.
        """
        sources = [name for name, value in (("model", model), ("adapter", adapter), ("run", run)) if value is not None]
        if len(sources) != 1:
            named = f" ({', '.join('--' + name for name in sources)})" if sources else ""
            raise ConfigError([f"pass exactly one of --model, --adapter or --run, got {len(sources)}{named}"])
        if model is not None:
            if base_model is not None:
                raise ConfigError([f"--base-model {base_model!r} applies to --adapter and --run only; with --model, drop it"])
            return cls.from_model(model, allow_pickle=allow_pickle, device=device)
        if adapter is not None:
            return cls.from_adapter(adapter, base_model=base_model, device=device)
        return cls.from_run(run, base_model=base_model, device=device)

    @classmethod
    def from_model(cls, name_or_path: str, *, allow_pickle: bool = False, device: str | None = None) -> Summarizer:
        """Load a base T5 checkpoint (hub id or local directory) and the tokenizer stored beside it."""
        from sumtune.model.weights import load_t5, resolve_model_dir

        model_dir = resolve_model_dir(name_or_path, allow_pickle)
        model = load_t5(str(model_dir), allow_pickle=allow_pickle)
        return cls(model, load_tokenizer(model_dir), device=device)

    @classmethod
    def from_adapter(cls, adapter_dir: str | Path, *, base_model: str | None = None, device: str | None = None,
                     defaults: RunDefaults | None = None) -> Summarizer:
        """Load a method checkpoint and its base model with `sumtune.methods.load_model_with_method`."""
        adapter_dir = Path(adapter_dir)
        if not adapter_dir.is_dir():
            raise CheckpointError(f"method checkpoint directory {adapter_dir} not found")
        try:
            from sumtune.methods import load_model_with_method
        except ImportError as error:
            raise SumtuneError(
                f"cannot load the method checkpoint {adapter_dir}: sumtune.methods is not available ({error})"
            ) from error
        model, tokenizer, method_config = load_model_with_method(adapter_dir, base_model)
        defaults = defaults or RunDefaults()
        try:
            generation = dataclasses.replace(DEFAULT_GENERATION, **defaults.generation)
        except TypeError as error:  # a value of the wrong type, such as a string for num_beams
            raise ConfigError([f"invalid generation setting in {RUN_CONFIG_FILE}: {error}"]) from error
        return cls(
            model,
            tokenizer,
            source_prefix=defaults.source_prefix if defaults.source_prefix is not None else DEFAULT_SOURCE_PREFIX,
            max_source_length=defaults.max_source_length or DEFAULT_MAX_SOURCE_LENGTH,
            generation_config=generation,
            batch_size=defaults.batch_size or DEFAULT_BATCH_SIZE,
            method_config=method_config,
            device=device,
        )

    @classmethod
    def from_run(cls, run_dir: str | Path, *, base_model: str | None = None, device: str | None = None) -> Summarizer:
        """Load the checkpoint in `run_dir/adapter` with the run's `config.yaml` as inference defaults."""
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise CheckpointError(f"run directory {run_dir} not found; pass the --output-dir of `sumtune train`")
        adapter_dir = run_dir / RUN_ADAPTER_DIR
        if not adapter_dir.is_dir():
            raise CheckpointError(
                f"run directory {run_dir} has no {RUN_ADAPTER_DIR}/ folder; the run may not have finished, "
                "or pass a method checkpoint with --adapter"
            )
        return cls.from_adapter(adapter_dir, base_model=base_model, device=device, defaults=read_run_defaults(run_dir))

    # -- summarizing -----------------------------------------------------------------------

    def summarize(
        self,
        texts: Sequence[str],
        generation_config: GenerationConfig | None = None,
        batch_size: int | None = None,
        source_prefix: str | None = None,
        max_source_length: int | None = None,
        progress: bool = True,
    ) -> list[str]:
        """Summarize `texts` in batches and return the summaries in input order.

        Arguments left None take the summarizer's defaults: DEFAULT_GENERATION, batches of 8,
        "summarize: " and 512 tokens, unless a run's `config.yaml` set others. Texts are sorted by
        tokenized length so that each batch carries little padding. A progress bar goes to stderr
        when `progress` is true and there is more than one batch.
        """
        import torch
        from tqdm.auto import tqdm

        generation_config = generation_config if generation_config is not None else self.generation_config
        batch_size = self.batch_size if batch_size is None else batch_size
        source_prefix = self.source_prefix if source_prefix is None else source_prefix
        max_source_length = self.max_source_length if max_source_length is None else max_source_length
        problems = []
        if batch_size < 1:
            problems.append(f"batch_size must be at least 1, got {batch_size}")
        if max_source_length < 1:
            problems.append(f"max_source_length must be at least 1, got {max_source_length}")
        if problems:
            raise ConfigError(problems)
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise DataError(f"text {index} is {type(text).__name__}, expected a string")
        if not texts:
            return []

        encoded = self.tokenizer(
            [source_prefix + text for text in texts], truncation=True, max_length=max_source_length
        )["input_ids"]
        # Decreasing length, so that the first batch shows early whether memory suffices.
        order = sorted(range(len(texts)), key=lambda index: len(encoded[index]), reverse=True)
        pad_id = self.model.config.pad_token_id
        summaries: list[str | None] = [None] * len(texts)
        batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
        bar = tqdm(total=len(texts), unit="text", desc="summarizing", file=sys.stderr,
                   disable=not progress or len(batches) <= 1)
        try:
            for batch in batches:
                width = max(len(encoded[index]) for index in batch)
                input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
                attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, index in enumerate(batch):
                    input_ids[row, : len(encoded[index])] = torch.tensor(encoded[index])
                    attention_mask[row, : len(encoded[index])] = 1
                outputs = generate(self.model, input_ids.to(self.device), attention_mask.to(self.device), generation_config)
                decoded = self.tokenizer.batch_decode(outputs, skip_special_tokens=True)
                for index, summary in zip(batch, decoded):
                    summaries[index] = summary.strip()
                bar.update(len(batch))
        finally:
            bar.close()
        return summaries


def load_tokenizer(model_dir: Path):
    """Load the tokenizer stored in a model directory, raising CheckpointError that names the missing files."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(model_dir))
    except (OSError, ValueError) as error:
        raise CheckpointError(
            f"could not load a tokenizer from {model_dir} ({error}); the directory needs the tokenizer files "
            "(tokenizer.json or spiece.model) next to config.json"
        ) from error


def generation_config_from(overrides: Mapping[str, Any], base: GenerationConfig | None = None) -> GenerationConfig:
    """Return `base` (or DEFAULT_GENERATION) with the non-None entries of `overrides` replaced."""
    base = base if base is not None else DEFAULT_GENERATION
    unknown = sorted(set(overrides) - set(GENERATION_FIELDS))
    if unknown:
        raise ConfigError([f"unknown generation setting {name!r}; expected one of {', '.join(GENERATION_FIELDS)}" for name in unknown])
    return dataclasses.replace(base, **{name: value for name, value in overrides.items() if value is not None})

"""Method checkpoints: `adapter_config.json` plus `adapter_model.safetensors` (a whole model for `full`).

`adapter_config.json` names the method, its settings, the base model and a fingerprint of the base
model's shape, so that loading onto a base of another shape fails before any tensor is copied.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import sumtune
from sumtune.errors import CheckpointError, ConfigError
from sumtune.methods.base import MethodConfig
from sumtune.methods.registry import METHODS, apply_method, spec_for_config, trainable_state_dict
from sumtune.model.t5 import T5
from sumtune.model.weights import atomic_write, hf_to_sumtune_name, load_t5, read_hf_state_dict, resolve_model_dir, save_t5

logger = logging.getLogger(__name__)

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"


def save_method(model: T5, config: MethodConfig, output_dir: str | Path, *, base_model: str, tokenizer=None) -> Path:
    """Write a method checkpoint to `output_dir` and return the directory.

    `base_model` is the hub id or directory of the base. A relative directory is stored as an
    absolute path, so the checkpoint loads from any working directory. Each file is written to a
    temporary name and renamed, and `adapter_config.json` comes last, so a directory that has it is
    complete. For `full`, the directory is a whole transformers-loadable model.
    """
    spec = spec_for_config(config)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if spec.name == "full":
        save_t5(model, output_dir)
    else:
        state = {name: tensor.detach().contiguous().clone() for name, tensor in trainable_state_dict(model, config).items()}
        metadata = {"format": "pt", "method": spec.name}
        atomic_write(output_dir / WEIGHTS_FILE, lambda path: save_file(state, str(path), metadata=metadata))
    if tokenizer is not None:
        save_tokenizer(tokenizer, output_dir)

    local = Path(base_model).expanduser()
    record = {
        "method": spec.name,
        "config": config.to_dict(),
        "base_model": {
            "name_or_path": str(local.resolve()) if local.is_dir() else base_model,
            "fingerprint": model.config.fingerprint(),
        },
        "sumtune_version": sumtune.__version__,
    }
    text = json.dumps(record, indent=2) + "\n"
    atomic_write(output_dir / CONFIG_FILE, lambda path: Path(path).write_text(text, encoding="utf-8"))
    return output_dir


def save_tokenizer(tokenizer, output_dir: Path) -> None:
    """Save the tokenizer in a temporary directory beside the checkpoint, then move each file in."""
    staging = Path(tempfile.mkdtemp(dir=output_dir, prefix=".tokenizer."))
    try:
        tokenizer.save_pretrained(staging)
        for item in staging.iterdir():
            os.replace(item, output_dir / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_method_record(adapter_dir: str | Path) -> dict[str, Any]:
    """Read and check `adapter_config.json`; raise CheckpointError naming what is missing or invalid."""
    adapter_dir = Path(adapter_dir)
    path = adapter_dir / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{adapter_dir} has no {CONFIG_FILE}; pass a directory written by sumtune train or save_method "
            "(for a run folder, its adapter/ subdirectory)"
        )
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(record, dict):
        raise CheckpointError(f"{path} must contain a JSON object, got {type(record).__name__}")
    if "peft_type" in record:
        raise CheckpointError(f"{path} is a peft adapter; sumtune loads its own method checkpoints only")
    missing = [key for key in ("method", "config", "base_model") if key not in record]
    base = record.get("base_model")
    if not isinstance(base, dict) or "fingerprint" not in base or "name_or_path" not in base:
        missing.append("base_model.name_or_path and base_model.fingerprint")
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}; it was not written by sumtune's save_method")
    if record["method"] not in METHODS:
        raise CheckpointError(f"{path} names method {record['method']!r}; expected one of: {', '.join(METHODS)}")
    return record


def record_config(record: dict[str, Any], adapter_dir: Path) -> MethodConfig:
    config_class = METHODS[record["method"]].config_class
    try:
        return config_class.from_dict(record["config"])
    except ConfigError as error:
        raise CheckpointError(f"{adapter_dir / CONFIG_FILE} has an invalid {record['method']} config: {error}") from error


def check_fingerprint(model: T5, record: dict[str, Any], adapter_dir: Path) -> None:
    expected = record["base_model"]["fingerprint"]
    actual = model.config.fingerprint()
    if expected != actual:
        config = model.config
        raise CheckpointError(
            f"{adapter_dir} was trained on base model {record['base_model']['name_or_path']!r} "
            f"(shape fingerprint {expected}), but the model it is being loaded onto has fingerprint {actual} "
            f"(d_model={config.d_model}, d_kv={config.d_kv}, num_heads={config.num_heads}, "
            f"num_layers={config.num_layers}/{config.num_decoder_layers}, d_ff={config.d_ff}, "
            f"vocab_size={config.vocab_size}, feed_forward_proj={config.feed_forward_proj!r}); "
            "load it onto the base model it was trained on"
        )


def check_state(expected: dict[str, Any], found: dict[str, Any], source: Path) -> None:
    """Raise CheckpointError unless `found` has exactly the names and shapes of `expected`."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong_shape = [
        f"{name} {tuple(found[name].shape)} (expected {tuple(expected[name].shape)})"
        for name in sorted(set(expected) & set(found)) if found[name].shape != expected[name].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensors such as {missing[:3]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors such as {unexpected[:3]}")
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} tensors of the wrong shape such as {wrong_shape[:3]}")
    if problems:
        raise CheckpointError(f"{source} does not fit the model: " + "; ".join(problems))


def read_weights(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path} not found; the checkpoint is incomplete")
    try:
        return load_file(path)
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors file: {error}") from error


def load_method(model: T5, adapter_dir: str | Path) -> MethodConfig:
    """Load a method checkpoint onto an already loaded base model and return the saved method config.

    The model must be a fresh base (no method applied). Prefix checkpoints come back as plain
    prefixes even when they were trained with the reparametrization MLP.
    """
    adapter_dir = Path(adapter_dir)
    record = read_method_record(adapter_dir)
    config = record_config(record, adapter_dir)
    check_fingerprint(model, record, adapter_dir)
    spec = spec_for_config(config)

    if spec.name == "full":
        hf_state = read_hf_state_dict(adapter_dir)
        found = {name: tensor for hf_name, tensor in hf_state.items() if (name := hf_to_sumtune_name(hf_name)) is not None}
        expected = trainable_state_dict(model, config)
        if "lm_head.weight" in found and "lm_head.weight" not in expected:
            del found["lm_head.weight"]
        check_state(expected, found, adapter_dir / "model.safetensors")
        model.load_state_dict(found, strict=False)
        apply_method(model, config, report=False)
        return config

    found = read_weights(adapter_dir / WEIGHTS_FILE)
    apply_method(model, spec.load_config(config), report=False)
    check_state(trainable_state_dict(model, spec.load_config(config)), found, adapter_dir / WEIGHTS_FILE)
    model.load_state_dict(found, strict=False)
    return config


def load_model_with_method(adapter_dir: str | Path, base_model: str | None = None):
    """Load the base model named in the checkpoint (or `base_model`), then the method; return (model, tokenizer, config).

    The tokenizer comes from the checkpoint directory when it contains one, otherwise from the base model.
    """
    adapter_dir = Path(adapter_dir)
    record = read_method_record(adapter_dir)
    if record["method"] == "full":
        if base_model is not None:
            logger.warning("%s is a full fine-tuned model; the base model %r is not used", adapter_dir, base_model)
        model = load_t5(str(adapter_dir))  # the directory is the whole model, already loaded here
        config = record_config(record, adapter_dir)
        apply_method(model, config, report=False)
        return model, load_tokenizer(adapter_dir, None), config
    base = base_model if base_model is not None else record["base_model"]["name_or_path"]
    model = load_t5(base)
    config = load_method(model, adapter_dir)
    return model, load_tokenizer(adapter_dir, base), config


def load_tokenizer(adapter_dir: Path, base_model: str | None):
    from transformers import AutoTokenizer

    candidates = [adapter_dir] if any(adapter_dir.glob("tokenizer*")) else []
    if base_model is not None:
        candidates.append(resolve_model_dir(base_model))
    for directory in candidates:
        try:
            return AutoTokenizer.from_pretrained(str(directory))
        except (OSError, ValueError) as error:
            logger.warning("could not load a tokenizer from %s: %s", directory, error)
    raise CheckpointError(
        f"no tokenizer found in {adapter_dir} or in the base model {base_model!r}; save the checkpoint with "
        "save_method(..., tokenizer=tokenizer) or pass a base model directory that contains tokenizer files"
    )

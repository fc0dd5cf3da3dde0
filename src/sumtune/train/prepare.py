"""Everything a run needs before its first step: the output folder, data, model, optimizer and schedule.

Each check here runs before training starts, so bad input fails in seconds with a clear error
instead of after the first evaluation.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sumtune.data import Example, available_splits, is_single_file, load_examples, split_train_validation
from sumtune.errors import CheckpointError, ConfigError
from sumtune.train.checkpoint import CHECKPOINTS_DIR, latest_checkpoint, remove_stale_temporaries
from sumtune.train.config import TrainConfig

logger = logging.getLogger(__name__)

# Files and folders that `sumtune train` writes into a run folder; --overwrite-output-dir removes
# these and nothing else.
RUN_ARTIFACTS = (
    "config.yaml", "metrics.json", "metrics.jsonl", "predictions.jsonl", "adapter", CHECKPOINTS_DIR,
    "tensorboard", "eval",
)


# ---------------------------------------------------------------------------------------------
# Output folder
# ---------------------------------------------------------------------------------------------


def check_output_dir(config: TrainConfig) -> Path | None:
    """Check the run folder against --resume and --overwrite-output-dir; return the checkpoint to resume from.

    Nothing is deleted here; `clear_run` does that on the main process once every check passed.
    """
    output_dir = Path(config.output_dir)
    if config.resume:
        checkpoint = latest_checkpoint(output_dir)
        if checkpoint is None:
            raise CheckpointError(
                f"--resume is set, but {output_dir / CHECKPOINTS_DIR} contains no checkpoint; start the run "
                "without --resume, or check --output-dir"
            )
        return checkpoint
    existing = [name for name in RUN_ARTIFACTS if (output_dir / name).exists()]
    if existing and not config.overwrite_output_dir:
        raise ConfigError([
            f"output_dir {output_dir} already contains a run ({', '.join(existing)}); pass --resume to continue "
            "it, --overwrite-output-dir to replace it, or choose another --output-dir"
        ])
    return None


def clear_run(output_dir: Path, resuming: bool) -> None:
    """Prepare the run folder on the main process: remove an old run being replaced, or half-written files."""
    output_dir.mkdir(parents=True, exist_ok=True)
    if resuming:
        remove_stale_temporaries(output_dir)
        return
    for name in RUN_ARTIFACTS:
        path = output_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def load_splits(config: TrainConfig) -> tuple[list[Example], list[Example]]:
    """Load training and validation examples.

    A source without a validation split (a single file, or a directory without one) gives up
    `validation_size` of its training rows for validation, chosen by the seed, so the model is
    never validated on rows it trains on.
    """
    options = dict(text_column=config.text_column, summary_column=config.summary_column, strict=config.strict)
    holdout = is_single_file(config.data) or "validation" not in available_splits(config.data)
    if holdout:
        examples = load_examples(config.data, "train", **options)
        if config.evaluation_enabled:
            size = config.validation_size
            size = int(size) if size >= 1 else float(size)
            train, validation = split_train_validation(examples, size, seed=config.seed)
        else:
            train, validation = examples, []
    else:
        train = load_examples(config.data, "train", max_samples=config.max_train_samples, **options)
        validation = []
        if config.evaluation_enabled:
            validation = load_examples(config.data, "validation", max_samples=config.max_eval_samples, **options)
    if config.max_train_samples is not None:
        train = train[: config.max_train_samples]
    if config.max_eval_samples is not None:
        validation = validation[: config.max_eval_samples]
    logger.info("training on %d examples, validating on %d", len(train), len(validation))
    return train, validation


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: Any
    base_model: str  # what adapter_config.json records: a hub id, or an absolute local path
    fingerprint: str


def load_base(config: TrainConfig) -> LoadedModel:
    """Load the base T5 and its tokenizer, and check that they belong together."""
    from sumtune.evaluate import load_tokenizer
    from sumtune.model import load_t5
    from sumtune.model.weights import resolve_model_dir

    model_dir = resolve_model_dir(config.model)
    model = load_t5(config.model)
    tokenizer = load_tokenizer(model_dir)
    vocab = model.config.vocab_size
    if len(tokenizer) > vocab:
        raise CheckpointError(
            f"the tokenizer in {model_dir} has {len(tokenizer)} tokens but the model's vocabulary has {vocab}; "
            "the tokenizer does not belong to this model"
        )
    if tokenizer.pad_token_id != model.config.pad_token_id:
        raise CheckpointError(
            f"the tokenizer in {model_dir} pads with id {tokenizer.pad_token_id}, the model with "
            f"{model.config.pad_token_id}; use the tokenizer saved with the model"
        )
    local = Path(config.model).expanduser()
    base_model = str(local.resolve()) if local.is_dir() else config.model
    return LoadedModel(model, tokenizer, base_model, model.config.fingerprint())


def check_same_base(output_dir: Path, base_model: str, fingerprint: str) -> None:
    """Compare a resumed run's base model with the one in its config.yaml.

    A different shape raises CheckpointError. A different name or path of the same shape only
    logs a warning, because a model directory may have moved.
    """
    from sumtune.train.config import read_yaml_mapping

    path = Path(output_dir) / "config.yaml"
    base = read_yaml_mapping(path).get("base_model") if path.is_file() else None
    if not isinstance(base, dict):
        return
    if base.get("fingerprint") not in (None, fingerprint):
        raise CheckpointError(
            f"{output_dir} was trained on {base.get('name_or_path')!r} (shape fingerprint {base['fingerprint']}), "
            f"but --model now has fingerprint {fingerprint}; resume with the base model the run started with"
        )
    if base.get("name_or_path") not in (None, base_model):
        logger.warning("resuming %s, which started from %s, with base model %s of the same shape",
                       output_dir, base["name_or_path"], base_model)


def set_dropout(model: nn.Module, rate: float) -> None:
    """Set the dropout probability of every dropout layer and attention module of the base model."""
    from sumtune.model.t5 import Attention

    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = rate
        elif isinstance(module, Attention):
            module.dropout = rate


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# Optimizer and schedule
# ---------------------------------------------------------------------------------------------


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(name, parameter) for name, parameter in model.named_parameters() if parameter.requires_grad]


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters only.

    Weight decay applies to matrices (2 or more dimensions) and not to vectors such as biases and
    norm scales, following common transformer practice. Prompt and prefix tables are matrices,
    so they do get weight decay when it is set.
    """
    decay, no_decay = [], []
    for _, parameter in trainable_parameters(model):
        (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    if not decay and not no_decay:
        raise ConfigError([f"method {config.method!r} left no trainable parameters; check its options"])
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        [group for group in groups if group["params"]],
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        eps=config.adam_epsilon,
    )


def lr_multiplier(kind: str, warmup: int, total: int) -> Callable[[int], float]:
    """Return the factor of the peak learning rate used by optimizer step k (0-based).

    Warmup rises linearly and reaches the peak at step warmup-1, so no step runs at rate 0; then
    the rate stays constant or decays linearly or along a half cosine towards 0 at step `total`.
    """

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0 - progress

    return multiplier


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int):
    warmup = config.warmup_steps or round(config.warmup_ratio * total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(config.lr_scheduler, warmup, total_steps))


def total_steps(config: TrainConfig, steps_per_epoch: int) -> int:
    if config.max_steps is not None:
        return config.max_steps
    return max(1, math.ceil(config.epochs * steps_per_epoch))

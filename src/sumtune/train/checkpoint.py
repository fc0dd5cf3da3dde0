"""Resumable training checkpoints in `OUTPUT_DIR/checkpoints/step-N/`.

A checkpoint contains what an interrupted run needs to continue exactly where it stopped:

- `model.safetensors`: the trainable parameters (the method's weights; every weight for `full`),
  under their names in the model's state dict;
- `optimizer.pt` and `scheduler.pt`: the AdamW and learning-rate schedule states;
- `rng_state_R.pt`: the Python, NumPy and torch random states of process R;
- `trainer_state.json`: step, data position, best score so far and counters, written last.

Each checkpoint is written to a hidden temporary folder beside its final place and then renamed,
so `step-N/` is complete whenever it exists. Files are read back with `torch.load(weights_only=True)`,
which loads tensors and plain containers and refuses arbitrary pickled objects.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from sumtune.errors import CheckpointError

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "trainer_state.json"
WEIGHTS_FILE = "model.safetensors"
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass
class TrainerState:
    """Progress of a run, saved with each checkpoint.

    `epoch` and `step_in_epoch` locate the next optimizer step in the batch order;
    `best_metrics` are the evaluation metrics of the best step so far.
    """

    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    best_score: float | None = None
    best_step: int | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    last_eval_step: int | None = None
    last_metrics: dict[str, float] = field(default_factory=dict)
    evaluations_without_improvement: int = 0
    tokens_seen: int = 0
    train_seconds: float = 0.0
    world_size: int = 1

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_file(cls, path: Path) -> TrainerState:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**data)
        except (OSError, json.JSONDecodeError, TypeError) as error:
            raise CheckpointError(f"{path} is unreadable or not a sumtune trainer state ({error})") from None


def checkpoint_dirs(output_dir: Path) -> list[tuple[int, Path]]:
    """Return the complete checkpoints of a run as (step, path), oldest first."""
    folder = Path(output_dir) / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _STEP_DIR.match(path.name)
        if match and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(output_dir: Path) -> Path | None:
    found = checkpoint_dirs(output_dir)
    return found[-1][1] if found else None


def rng_states() -> dict[str, Any]:
    """Collect the random states that training consumes (dropout uses torch's)."""
    numpy_state = np.random.get_state()
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    name, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(
    output_dir: Path,
    state: TrainerState,
    trainable: dict[str, Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    rng_by_rank: list[dict[str, Any]],
    keep: int,
) -> Path:
    """Write `checkpoints/step-N/` atomically from the main process and keep the newest `keep`.

    `rng_by_rank` contains the random states of every process, gathered to the main process, so
    that the renamed folder is complete for all of them.
    """
    folder = Path(output_dir) / CHECKPOINTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{state.step}"
    temporary = Path(tempfile.mkdtemp(dir=folder, prefix=f".step-{state.step}-"))
    try:
        tensors = {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in trainable.items()}
        save_file(tensors, str(temporary / WEIGHTS_FILE), metadata={"format": "pt"})
        torch.save(optimizer.state_dict(), temporary / "optimizer.pt")
        torch.save(scheduler.state_dict(), temporary / "scheduler.pt")
        for rank, states in enumerate(rng_by_rank):
            torch.save(states, temporary / f"rng_state_{rank}.pt")
        (temporary / STATE_FILE).write_text(state.to_json(), encoding="utf-8")
        _replace_dir(temporary, final)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    prune_checkpoints(output_dir, keep)
    return final


def _replace_dir(source: Path, target: Path) -> None:
    """Rename `source` to `target`; an existing `target` is moved aside first and removed after."""
    if not target.exists():
        os.rename(source, target)
        return
    aside = target.with_name(f".{target.name}-replaced-{os.getpid()}")
    os.rename(target, aside)
    os.rename(source, target)
    shutil.rmtree(aside, ignore_errors=True)


def prune_checkpoints(output_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints."""
    found = checkpoint_dirs(output_dir)
    for _, path in found[: max(0, len(found) - keep)]:
        shutil.rmtree(path, ignore_errors=True)


def remove_stale_temporaries(output_dir: Path) -> None:
    """Remove half-written checkpoint folders left by a run that was killed while saving."""
    folder = Path(output_dir) / CHECKPOINTS_DIR
    if folder.is_dir():
        for path in folder.iterdir():
            if path.name.startswith(".") and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)


def load_trainable(checkpoint: Path, model: nn.Module, expected_names: set[str]) -> None:
    """Copy the checkpoint's trainable tensors into `model`, checking that the names match exactly."""
    tensors = load_file(str(checkpoint / WEIGHTS_FILE))
    missing = sorted(expected_names - set(tensors))
    unexpected = sorted(set(tensors) - expected_names)
    if missing or unexpected:
        raise CheckpointError(
            f"{checkpoint} does not fit this run's method: missing {len(missing)} tensors such as {missing[:3]}, "
            f"unexpected {len(unexpected)} such as {unexpected[:3]}; resume with the same --method and method "
            "options as the run that wrote it"
        )
    current = model.state_dict()
    for name, tensor in tensors.items():
        if current[name].shape != tensor.shape:
            raise CheckpointError(
                f"{checkpoint}: tensor {name} has shape {tuple(tensor.shape)}, but the model expects "
                f"{tuple(current[name].shape)}; resume with the same base model and method options"
            )
    model.load_state_dict(tensors, strict=False)


def load_training_state(checkpoint: Path, optimizer: torch.optim.Optimizer, scheduler: Any, rank: int) -> TrainerState:
    """Restore optimizer, scheduler and this process's random states; return the trainer state."""
    state = TrainerState.from_file(checkpoint / STATE_FILE)
    optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", map_location="cpu", weights_only=True))
    scheduler.load_state_dict(torch.load(checkpoint / "scheduler.pt", map_location="cpu", weights_only=True))
    rng_path = checkpoint / f"rng_state_{rank}.pt"
    if rng_path.is_file():
        restore_rng_states(torch.load(rng_path, map_location="cpu", weights_only=True))
    else:
        # NOTE: a run resumed on more processes than it was saved with has no random state for
        # the new ranks, so their dropout masks differ from an uninterrupted run.
        logger.warning("%s has no random state for process %d; dropout will not repeat exactly", checkpoint, rank)
    return state

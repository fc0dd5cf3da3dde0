"""Training: `TrainConfig`, `train()` and its result, presets, checkpoints and logs.

    from sumtune.train import TrainConfig, train
    result = train(TrainConfig(method="lora", model="t5-small", data="cnn_dailymail", output_dir="runs/lora"))

`TrainConfig` is imported eagerly and without torch, so the command line can build its options
quickly. The loop (and torch) load on first use of `train`, `TrainResult` or the exceptions.
"""

from __future__ import annotations

from typing import Any

from sumtune.train.config import TrainConfig, preset_names, preset_path, resolve_config

_LOOP_NAMES = ("train", "TrainResult", "StopTraining", "NonFiniteLossError")

__all__ = ["TrainConfig", "preset_names", "preset_path", "resolve_config", *_LOOP_NAMES]


def __getattr__(name: str) -> Any:
    if name in _LOOP_NAMES:
        from sumtune.train import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'sumtune.train' has no attribute {name!r}")

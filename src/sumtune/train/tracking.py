"""Training logs: the JSONL metrics log, TensorBoard, the progress bar and the closing report."""

from __future__ import annotations

import json
import logging
import math
import resource
import sys
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

METRICS_LOG = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


class MetricsLog:
    """Append one JSON object per line to `OUTPUT_DIR/metrics.jsonl`, and mirror scalars to TensorBoard.

    Every record has `step` (the optimizer step it describes) and namespaced keys such as
    `train/loss` or `eval/rouge1`. Only the main process writes.
    """

    def __init__(self, output_dir: Path, *, enabled: bool, tensorboard: bool, resume_step: int | None):
        self.path = Path(output_dir) / METRICS_LOG
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        if resume_step is None:
            self.path.write_text("", encoding="utf-8")
        else:
            truncate_log(self.path, resume_step)
        if tensorboard:
            self.writer = open_tensorboard(Path(output_dir) / TENSORBOARD_DIR, resume_step)

    def write(self, step: int, values: dict[str, float]) -> dict[str, Any]:
        record = {"step": step, **values}
        if not self.enabled:
            return record
        with self.path.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, int | float):
                    self.writer.add_scalar(key, value, step)
            self.writer.flush()
        return record

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def truncate_log(path: Path, last_step: int) -> None:
    """Drop log records after `last_step`: they describe steps a resumed run will repeat."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short when the previous run was killed
        if isinstance(record, dict) and record.get("step", math.inf) <= last_step:
            kept.append(line)
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


def open_tensorboard(log_dir: Path, resume_step: int | None):
    """Return a SummaryWriter, or None when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.info("tensorboard is not installed; writing metrics.jsonl only (pip install tensorboard)")
        return None
    # purge_step hides events after the checkpoint that an interrupted run had already written.
    purge = resume_step + 1 if resume_step is not None else None
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge)


def read_metrics_log(path: str | Path) -> list[dict[str, Any]]:
    """Read `metrics.jsonl` back into a list of records."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


class ProgressBar:
    """A tqdm bar on stderr over optimizer steps, showing loss, learning rate and tokens/s."""

    def __init__(self, total: int, initial: int, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc="training", unit="step", file=sys.stderr,
                            dynamic_ncols=True)

    def update(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def show(self, loss: float, lr: float, tokens_per_second: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_second:,.0f}")

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """Return the peak memory in MiB and what it measures: CUDA allocations, or the process's resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "CUDA memory allocated by tensors"
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak resident memory of the process"


def format_report(
    *,
    steps: int,
    wall_time_s: float,
    tokens_per_second: float,
    peak_memory: float,
    memory_kind: str,
    best_metric: str,
    best_step: int | None,
    best_metrics: dict[str, float],
    adapter_dir: Path,
    stop_reason: str | None,
) -> str:
    """Return the closing report printed at the end of training."""
    lines = [
        f"training finished after {steps} steps in {wall_time_s:.1f} s"
        + (f" ({stop_reason})" if stop_reason else ""),
        f"throughput: {tokens_per_second:,.0f} tokens/s (non-padding source and target tokens)",
        f"peak memory: {peak_memory:,.0f} MiB ({memory_kind})",
    ]
    if best_step is not None and best_metrics:
        scores = ", ".join(
            f"{key.removeprefix('eval/')} {best_metrics[key]:.2f}"
            for key in ("eval/rouge1", "eval/rouge2", "eval/rougeL", "eval/rougeLsum") if key in best_metrics
        )
        lines.append(f"best {best_metric}: {best_metrics.get('eval/' + best_metric, float('nan')):.2f} at step "
                     f"{best_step} ({scores})")
        lines.append(f"best checkpoint: {adapter_dir}")
    else:
        lines.append(f"no evaluation; final weights saved to {adapter_dir}")
    return "\n".join(lines)

"""Statistics, report.md and plots of `sumtune compare`.

The report applies one noise rule to the gap in ROUGE-Lsum between two methods. The gap is a
real difference only when two conditions hold. First, the 95% paired bootstrap interval of the
gap excludes zero. That bootstrap resamples the shared evaluation examples, and each method's
score per example is its mean over seeds. Second, with two or more seeds per method, the gap is larger
than the sum of the two methods' standard deviations across seeds. Any other gap is within the
noise.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sumtune.files import replacing, write_text_atomically
from sumtune.metrics import ROUGE_TYPES

if TYPE_CHECKING:
    from sumtune.compare import CompareSettings

# Per-example ROUGE of a run's evaluation, written into its run folder for the paired bootstrap.
SCORES_FILE = "eval_scores.json"


# ---------------------------------------------------------------------------------------------
# Statistics for the report
# ---------------------------------------------------------------------------------------------


def summarize(values: Sequence[float]) -> tuple[float, float | None]:
    """Return the mean and the sample standard deviation (None for fewer than two values)."""
    array = np.asarray(values, dtype=np.float64)
    spread = float(array.std(ddof=1)) if array.size >= 2 else None
    return float(array.mean()), spread


def paired_bootstrap_interval(
    scores_a: np.ndarray, scores_b: np.ndarray, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Return the percentile bootstrap interval of mean(scores_a - scores_b) over shared examples."""
    differences = np.asarray(scores_a, dtype=np.float64) - np.asarray(scores_b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, differences.size, size=(n_resamples, differences.size))
    means = differences[indices].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


@dataclass
class Gap:
    """The ROUGE-Lsum gap between two methods and whether it exceeds the noise."""

    better: str
    worse: str
    gap: float
    interval: tuple[float, float] | None
    spreads: tuple[float | None, float | None]
    real: bool
    reason: str


def compare_pair(
    better: str, worse: str, rows: Sequence[Mapping[str, Any]], n_resamples: int, metric: str = "rougeLsum"
) -> Gap:
    """Apply the noise rule of this module to two methods' rows."""
    values_better = [row[metric] for row in rows if row["method"] == better]
    values_worse = [row[metric] for row in rows if row["method"] == worse]
    mean_better, spread_better = summarize(values_better)
    mean_worse, spread_worse = summarize(values_worse)
    gap = mean_better - mean_worse

    interval = None
    per_example_better = _mean_scores(better, rows, metric)
    per_example_worse = _mean_scores(worse, rows, metric)
    if per_example_better is not None and per_example_worse is not None and (
        per_example_better[0] == per_example_worse[0]
    ):
        interval = paired_bootstrap_interval(per_example_better[1], per_example_worse[1], n_resamples)

    reasons = []
    real = True
    if interval is None:
        real = False
        reasons.append("no shared per-example scores for a paired bootstrap")
    elif interval[0] <= 0.0 <= interval[1]:
        real = False
        reasons.append("the paired bootstrap interval contains 0")
    if spread_better is not None and spread_worse is not None:
        if abs(gap) <= spread_better + spread_worse:
            real = False
            reasons.append("the gap is within the summed seed standard deviations")
    reason = "; ".join(reasons) if reasons else "the interval excludes 0 and the gap exceeds the seed spread"
    return Gap(better, worse, gap, interval, (spread_better, spread_worse), real, reason)


def _mean_scores(method: str, rows: Sequence[Mapping[str, Any]], metric: str) -> tuple[tuple, np.ndarray] | None:
    """Return (example keys, per-example scores averaged over seeds), or None when runs disagree on examples."""
    keys = None
    columns = []
    for row in rows:
        if row["method"] != method:
            continue
        path = Path(row["run_dir"]) / SCORES_FILE
        if not path.is_file():
            return None
        scores = json.loads(path.read_text(encoding="utf-8"))
        row_keys = tuple(zip(scores["ids"], scores["references"]))
        if keys is not None and row_keys != keys:
            return None
        keys = row_keys
        columns.append(np.asarray(scores[metric], dtype=np.float64))
    if not columns:
        return None
    return keys, np.mean(np.stack(columns), axis=0)


def format_mean(values: Sequence[float], digits: int = 2) -> str:
    """Format values as 'mean ± sd', or the mean alone for a single value."""
    finite = [value for value in values if value is not None and math.isfinite(value)]
    if not finite:
        return "n/a"
    mean, spread = summarize(finite)
    return f"{mean:.{digits}f}" if spread is None else f"{mean:.{digits}f} ± {spread:.{digits}f}"


# ---------------------------------------------------------------------------------------------
# report.md and plots
# ---------------------------------------------------------------------------------------------


def write_report(
    settings: CompareSettings,
    rows: Sequence[Mapping[str, Any]],
    failures: Sequence[tuple[str, int, str]] = (),
) -> list[Path]:
    """Write report.md and the three PNG plots into the output folder and return their paths."""
    output_dir = settings.output_dir
    methods = _methods_by_score(rows)
    report = output_dir / "report.md"
    lines = _report_lines(settings, rows, methods)
    if failures:
        lines += ["", "## Runs that failed", "", "These runs have no row; the next call trains them again.", ""]
        lines += [f"- {method} (seed {seed}): {message}" for method, seed, message in failures]
    text = "\n".join(lines) + "\n"
    write_text_atomically(report, text)
    return [report, *write_plots(output_dir, rows, methods)]


def _methods_by_score(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    methods = sorted({row["method"] for row in rows})
    return sorted(methods, key=lambda method: -summarize([r["rougeLsum"] for r in rows if r["method"] == method])[0])


def _report_lines(settings: CompareSettings, rows: Sequence[Mapping[str, Any]], methods: list[str]) -> list[str]:
    budget = settings.header()["budget"]
    budget_text = ", ".join(
        text for text in (
            f"{budget['steps']} optimizer steps" if budget["steps"] is not None else "",
            f"{budget['minutes']} minutes of training" if budget["minutes"] is not None else "",
        ) if text
    ) or "the training config's own epochs or max_steps"
    examples = sorted({row.get("eval_examples") for row in rows})
    lines = [
        "# Method comparison",
        "",
        f"- model: `{settings.model}`",
        f"- data: `{settings.data}`; evaluation on split `{settings.eval_split}`, "
        f"{', '.join(map(str, examples))} examples, the same for every run",
        f"- budget per run: {budget_text}",
        "- scores: ROUGE F1 x100, mean ± standard deviation across seeds (a single seed shows the mean only)",
        "- peak memory: memory allocated by tensors on a GPU, or the peak resident memory of the training "
        "process on a CPU",
        "",
        "| method | seeds | ROUGE-1 | ROUGE-2 | ROUGE-L | ROUGE-Lsum | trainable params | trainable % "
        "| checkpoint | tokens/s | wall time (s) | peak memory (MiB) |",
        "| --- | --- | " + " | ".join(["---:"] * 10) + " |",
    ]
    for method in methods:
        own = [row for row in rows if row["method"] == method]
        seeds = ",".join(str(row["seed"]) for row in own)
        cells = [format_mean([row[name] for row in own]) for name in ROUGE_TYPES]
        cells.append(f"{int(np.mean([row['trainable_params'] for row in own])):,}")
        cells.append(format_mean([row["trainable_percent"] for row in own], digits=3))
        cells.append(_format_size(np.mean([row["checkpoint_size_bytes"] for row in own])))
        cells.append(format_mean([row["train_tokens_per_second"] for row in own], digits=0))
        cells.append(format_mean([row["wall_time_s"] for row in own], digits=1))
        cells.append(format_mean([row["peak_memory_mb"] for row in own], digits=0))
        lines.append(f"| {method} | {seeds} | " + " | ".join(cells) + " |")

    lines += ["", "## Which differences are within the noise", ""]
    lines += _noise_lines(rows, methods, settings.bootstrap_resamples)
    lines += [
        "",
        "## Plots",
        "",
        "![ROUGE-Lsum against trainable parameters](rouge_vs_params.png)",
        "",
        "![Validation loss per method](validation_loss.png)",
        "",
        "![Training time and peak memory per method](time_memory.png)",
    ]
    return lines


def _noise_lines(rows: Sequence[Mapping[str, Any]], methods: list[str], n_resamples: int) -> list[str]:
    lines = [
        "Rule: a gap in ROUGE-Lsum between two methods is a real difference only when the 95% paired "
        f"bootstrap interval of the gap ({n_resamples} resamples of the shared evaluation examples, "
        "each method's per-example scores averaged over its seeds) excludes 0, and, with two or more "
        "seeds per method, the gap is larger than the sum of the two methods' standard deviations "
        "across seeds. Otherwise it is within the noise.",
        "",
    ]
    if len(methods) < 2:
        return lines + ["Only one method has results, so there is nothing to compare."]
    lines += ["| methods | gap | 95% interval | verdict | why |", "| --- | ---: | --- | --- | --- |"]
    for index, better in enumerate(methods):
        for worse in methods[index + 1:]:
            gap = compare_pair(better, worse, rows, n_resamples)
            interval = "n/a" if gap.interval is None else f"[{gap.interval[0]:+.2f}, {gap.interval[1]:+.2f}]"
            verdict = "real difference" if gap.real else "within the noise"
            lines.append(f"| {better} vs {worse} | {gap.gap:+.2f} | {interval} | {verdict} | {gap.reason} |")
    return lines


def _format_size(size_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size_bytes < 1024 or unit == "GiB":
            return f"{size_bytes:.0f} {unit}" if unit == "B" else f"{size_bytes:.1f} {unit}"
        size_bytes /= 1024
    raise AssertionError("unreachable")


def read_eval_losses(run_dir: Path) -> list[tuple[int, float]]:
    """Return (step, eval/loss) pairs from a run's metrics.jsonl, in file order."""
    path = Path(run_dir) / "metrics.jsonl"
    points = []
    if not path.is_file():
        return points
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if "eval/loss" in record and "step" in record:
            points.append((int(record["step"]), float(record["eval/loss"])))
    return points


def write_plots(output_dir: Path, rows: Sequence[Mapping[str, Any]], methods: list[str]) -> list[Path]:
    """Draw ROUGE-Lsum against trainable parameters, validation loss curves, and time and memory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {method: plt.get_cmap("tab10")(index % 10) for index, method in enumerate(sorted(methods))}
    drawings = {
        "rouge_vs_params.png": _plot_rouge_vs_params,
        "validation_loss.png": _plot_validation_loss,
        "time_memory.png": _plot_time_memory,
    }
    written = []
    for name, draw in drawings.items():
        figure = draw(plt, rows, methods, colors)
        figure.tight_layout()
        path = output_dir / name
        with replacing(path) as temporary:
            figure.savefig(temporary, dpi=100)
        plt.close(figure)
        written.append(path)
    return written


def _plot_rouge_vs_params(plt, rows, methods, colors):
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for method in methods:
        own = [row for row in rows if row["method"] == method]
        params = float(np.mean([row["trainable_params"] for row in own]))
        mean, spread = summarize([row["rougeLsum"] for row in own])
        axes.errorbar(params, mean, yerr=spread or 0.0, fmt="o", capsize=4, color=colors[method], label=method)
        axes.annotate(method, (params, mean), textcoords="offset points", xytext=(6, 6))
    axes.set_xscale("log")
    axes.set_xlabel("trainable parameters (log scale)")
    axes.set_ylabel("ROUGE-Lsum (F1 x100)")
    axes.set_title("ROUGE-Lsum against trainable parameters")
    axes.grid(True, which="both", alpha=0.3)
    return figure


def _plot_validation_loss(plt, rows, methods, colors):
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(figsize=(7, 4.5))
    drawn = False
    for method in methods:
        for row in (row for row in rows if row["method"] == method):
            points = read_eval_losses(Path(row["run_dir"]))
            if not points:
                continue
            steps, losses = zip(*points)
            label = f"{method} (seed {row['seed']})"
            axes.plot(steps, losses, marker="o", markersize=3, color=colors[method], label=label)
            drawn = True
    if drawn:
        axes.legend(fontsize="small")
    else:
        axes.text(0.5, 0.5, "no validation loss logged", ha="center", va="center", transform=axes.transAxes)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("validation loss")
    axes.set_title("Validation loss per method")
    axes.grid(True, alpha=0.3)
    return figure


def _plot_time_memory(plt, rows, methods, colors):
    figure, (time_axes, memory_axes) = plt.subplots(1, 2, figsize=(10, 4.5))
    positions = np.arange(len(methods))
    for axes, key, label in (
        (time_axes, "wall_time_s", "training wall time (s)"),
        (memory_axes, "peak_memory_mb", "peak memory (MiB)"),
    ):
        stats = [summarize([row[key] for row in rows if row["method"] == method]) for method in methods]
        means = [mean for mean, _ in stats]
        errors = [spread or 0.0 for _, spread in stats]
        axes.bar(positions, means, yerr=errors, capsize=4, color=[colors[method] for method in methods])
        axes.set_xticks(positions, methods)
        axes.set_ylabel(label)
        axes.grid(True, axis="y", alpha=0.3)
    time_axes.set_title("Time per method")
    memory_axes.set_title("Peak memory per method")
    return figure

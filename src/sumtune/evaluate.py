"""Evaluation: generate summaries for a data split, score them with ROUGE and save the predictions.

`evaluate_run` evaluates a trained run folder (its best adapter and its own settings: source
prefix, maximum source length, generation settings), a method checkpoint on a base model, or a
plain base model. Scores are ROUGE F1 x100 from `sumtune.metrics` with 95% bootstrap intervals;
`gen_len` is the mean number of words per generated summary.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from sumtune.errors import CheckpointError, ConfigError

logger = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.jsonl"
ADAPTER_DIR = "adapter"
CONFIG_FILE = "config.yaml"
# Settings that a run's config.yaml supplies to evaluation; keyword arguments override them.
RUN_SETTINGS = (
    "source_prefix", "max_source_length", "text_column", "summary_column", "precision",
    "num_beams", "max_new_tokens", "min_new_tokens", "length_penalty", "no_repeat_ngram_size",
    "beam_early_stopping", "eval_batch_size",
)


@dataclass
class EvalResult:
    """ROUGE means (F1 x100), their 95% bootstrap intervals, mean generated words and where predictions went."""

    scores: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    gen_len: float
    count: int
    predictions_path: Path | None
    rouge: Any = field(default=None, repr=False)  # the sumtune.metrics.RougeResult with per-example scores

    def to_dict(self) -> dict[str, Any]:
        output: dict[str, Any] = dict(self.scores)
        output["intervals"] = {name: [low, high] for name, (low, high) in self.intervals.items()}
        output["gen_len"] = self.gen_len
        output["count"] = self.count
        output["predictions"] = str(self.predictions_path) if self.predictions_path else None
        return output


def autocast_context(device: torch.device, precision: str):
    """Return a bf16 autocast context for precision "bf16", or a no-op context for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def generate_summaries(
    model,
    tokenizer,
    texts: Sequence[str],
    *,
    source_prefix: str,
    max_source_length: int,
    generation,
    batch_size: int,
    device: torch.device | None = None,
    precision: str = "fp32",
) -> list[str]:
    """Summarize `texts` in batches of similar length and return the summaries in input order.

    Each article is prefixed with `source_prefix` and cut to `max_source_length` tokens, as in
    training, so that the model gets the same kind of input at both times.
    """
    from sumtune.model import generate

    if not texts:
        return []
    device = device or next(model.parameters()).device
    ids = tokenizer([source_prefix + text for text in texts], max_length=max_source_length, truncation=True)["input_ids"]
    order = sorted(range(len(ids)), key=lambda index: -len(ids[index]))
    summaries: list[str] = [""] * len(ids)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = max(len(ids[row]) for row in rows)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for position, row in enumerate(rows):
            input_ids[position, : len(ids[row])] = torch.tensor(ids[row])
            attention_mask[position, : len(ids[row])] = 1
        with autocast_context(device, precision):
            outputs = generate(model, input_ids.to(device), attention_mask.to(device), generation)
        for row, tokens in zip(rows, outputs):
            summaries[row] = tokenizer.decode(tokens, skip_special_tokens=True).strip()
    return summaries


def score_predictions(predictions: Sequence[str], references: Sequence[str], *, bootstrap: int = 1000, seed: int = 0):
    """Return (RougeResult, intervals, mean generated words) for predictions against references."""
    from sumtune import metrics

    result = metrics.rouge_scores(predictions, references)
    intervals = metrics.bootstrap_intervals(result, n_resamples=bootstrap, seed=seed) if bootstrap > 0 else {}
    return result, intervals, metrics.mean_length(predictions)


def prediction_records(examples, predictions: Sequence[str]) -> list[dict[str, Any]]:
    """Return predictions.jsonl records: id, article, reference and prediction."""
    return [
        {"id": example.id, "article": example.text, "reference": example.summary, "prediction": prediction}
        for example, prediction in zip(examples, predictions)
    ]


def read_run_settings(run_dir: Path) -> dict[str, Any]:
    """Read the evaluation settings of a run from its config.yaml."""
    from sumtune.train.config import read_yaml_mapping

    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{run_dir} has no {CONFIG_FILE}, so it is not a sumtune run folder; pass the --output-dir of a "
            "`sumtune train` run, or use --model (and --adapter) instead of --run"
        )
    saved = read_yaml_mapping(path)
    return {key: saved[key] for key in RUN_SETTINGS if key in saved}


def default_settings() -> dict[str, Any]:
    """Return the evaluation settings of a fresh TrainConfig (T5's summarization defaults)."""
    from sumtune.train.config import TrainConfig

    defaults = {item.name: item.default for item in fields(TrainConfig)}
    return {key: defaults[key] for key in RUN_SETTINGS}


def load_for_evaluation(run_dir: Path | None, model: str | None, adapter: str | Path | None):
    """Load (model, tokenizer) from a run folder, a method checkpoint or a plain base model."""
    from sumtune.methods import load_model_with_method

    if run_dir is not None:
        adapter = run_dir / ADAPTER_DIR
        if not (adapter / "adapter_config.json").is_file():
            raise CheckpointError(
                f"{run_dir} has no trained adapter ({adapter}/adapter_config.json is missing); the run may not "
                "have finished. Resume it with `sumtune train --resume --output-dir " + str(run_dir) + "`"
            )
    if adapter is not None:
        loaded, tokenizer, _ = load_model_with_method(str(adapter), base_model=model)
        return loaded, tokenizer
    if model is None:
        raise ConfigError(["pass a run folder (--run), a method checkpoint (--adapter) or a base model (--model)"])
    return load_base_model(model)


def load_base_model(name_or_dir: str):
    """Load a plain T5 and its tokenizer from a hub id or a local directory."""
    from sumtune.model import load_t5
    from sumtune.model.weights import resolve_model_dir

    model = load_t5(name_or_dir)
    return model, load_tokenizer(resolve_model_dir(name_or_dir))


def load_tokenizer(model_dir: Path):
    """Load the tokenizer saved with a model; raise CheckpointError when there is none."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(model_dir))
    except (OSError, ValueError) as error:
        raise CheckpointError(
            f"{model_dir} has no usable tokenizer ({error}); save the tokenizer next to the model, for example "
            "with tokenizer.save_pretrained(DIR)"
        ) from None


def evaluate_run(
    run_dir: str | Path | None = None,
    data: str | None = None,
    split: str = "test",
    *,
    model: str | None = None,
    adapter: str | Path | None = None,
    max_samples: int | None = None,
    output: str | Path | None = None,
    strict: bool = False,
    bootstrap: int = 1000,
    seed: int = 0,
    device: str | torch.device | None = None,
    **overrides: Any,
) -> EvalResult:
    """Generate summaries for one split, score them and write predictions.jsonl.

    `overrides` take any of RUN_SETTINGS (for example `num_beams=1`). With `run_dir`, the
    remaining settings come from the run's config.yaml, and predictions go to
    `RUN_DIR/eval/SPLIT/predictions.jsonl` with metrics.json beside it. Without it, the settings
    are TrainConfig's defaults and predictions go to `./predictions.jsonl`. `output` sets the file.
    """
    from sumtune.data import load_examples, write_jsonl

    unknown = sorted(set(overrides) - set(RUN_SETTINGS))
    if unknown:
        raise ConfigError([f"unknown evaluation setting {name!r}; expected one of {', '.join(RUN_SETTINGS)}"
                           for name in unknown])
    if data is None:
        raise ConfigError(["data is required: pass --data cnn_dailymail or a local JSONL/CSV/Parquet file"])
    run_path = Path(run_dir) if run_dir is not None else None
    settings = default_settings()
    if run_path is not None:
        settings.update(read_run_settings(run_path))
    settings.update({key: value for key, value in overrides.items() if value is not None})
    generation = generation_config(settings)

    examples = load_examples(
        data, split, text_column=settings["text_column"], summary_column=settings["summary_column"],
        max_samples=max_samples, strict=strict,
    )
    loaded, tokenizer = load_for_evaluation(run_path, model, adapter)
    target = torch.device(device) if device is not None else default_device()
    loaded.to(target).eval()
    predictions = generate_summaries(
        loaded, tokenizer, [example.text for example in examples],
        source_prefix=settings["source_prefix"], max_source_length=settings["max_source_length"],
        generation=generation, batch_size=settings["eval_batch_size"], device=target, precision=settings["precision"],
    )
    result, intervals, gen_len = score_predictions(predictions, [example.summary for example in examples],
                                                   bootstrap=bootstrap, seed=seed)

    if output is not None:
        predictions_path = Path(output)
    elif run_path is not None:
        predictions_path = run_path / "eval" / split / PREDICTIONS_FILE
    else:
        predictions_path = Path(PREDICTIONS_FILE)
    write_jsonl(predictions_path, prediction_records(examples, predictions))
    evaluation = EvalResult(
        scores={name: float(value) for name, value in result.means.items()},
        intervals=intervals, gen_len=gen_len, count=result.count, predictions_path=predictions_path, rouge=result,
    )
    if run_path is not None and output is None:
        metrics_path = predictions_path.parent / "metrics.json"
        metrics_path.write_text(json.dumps({"data": data, "split": split, **evaluation.to_dict()}, indent=2) + "\n",
                                encoding="utf-8")
    return evaluation


def generation_config(settings: dict[str, Any]):
    from sumtune.model import GenerationConfig

    return GenerationConfig(
        max_new_tokens=settings["max_new_tokens"],
        min_new_tokens=settings["min_new_tokens"],
        num_beams=settings["num_beams"],
        length_penalty=settings["length_penalty"],
        early_stopping=settings["beam_early_stopping"],
        no_repeat_ngram_size=settings["no_repeat_ngram_size"],
    )


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")

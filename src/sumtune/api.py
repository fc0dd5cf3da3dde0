"""The public Python API: load a model, apply a method, train, evaluate, summarize and score.

Every `sumtune` subcommand is a thin layer over these names:

    from sumtune import api

    model, tokenizer = api.load_model("t5-small")
    api.apply_method(model, api.method_config("lora", r=8), tokenizer=tokenizer)

    result = api.train(api.TrainConfig(method="lora", model="t5-small", data="articles.jsonl",
                                       output_dir="runs/lora", max_steps=500))
    evaluation = api.evaluate_run("runs/lora", "articles.jsonl", split="test")
    summaries = api.Summarizer.load(run="runs/lora").summarize(["(CNN) The city council ..."])
    scores = api.score(summaries, ["The council approved the budget."])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sumtune.evaluate import EvalResult, evaluate_run, generate_summaries
from sumtune.inference import Summarizer
from sumtune.methods import (
    METHODS, apply_method, count_parameters, load_method, load_model_with_method, method_config_class, save_method,
    trainable_state_dict,
)
from sumtune.metrics import RougeResult, bootstrap_intervals, format_rouge_table, rouge_scores
from sumtune.model import GenerationConfig, T5, generate, load_t5
from sumtune.train import NonFiniteLossError, StopTraining, TrainConfig, TrainResult, train

__all__ = [
    "METHODS", "EvalResult", "GenerationConfig", "NonFiniteLossError", "RougeResult", "StopTraining", "Summarizer",
    "T5", "TrainConfig", "TrainResult", "apply_method", "bootstrap_intervals", "count_parameters", "evaluate_run",
    "format_rouge_table", "generate", "generate_summaries", "load_method", "load_model", "load_model_with_method",
    "load_t5", "method_config", "method_config_class", "rouge_scores", "save_method", "score", "train",
    "trainable_state_dict",
]


def load_model(name_or_dir: str) -> tuple[T5, Any]:
    """Load a T5 (hub id or local directory) and the tokenizer saved with it."""
    from sumtune.evaluate import load_base_model

    return load_base_model(name_or_dir)


def method_config(method: str, **options: Any) -> Any:
    """Build and validate a method's config, such as `method_config("lora", r=8)`; raises ConfigError."""
    return method_config_class(method).from_dict(options)


def score(predictions: Sequence[str], references: Sequence[str]) -> RougeResult:
    """Return ROUGE-1, -2, -L and -Lsum F1 x100 of predictions against references (see `sumtune.metrics`)."""
    return rouge_scores(predictions, references)

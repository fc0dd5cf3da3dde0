"""The training loop shared by every method.

`train(config)` validates the config, loads data and model, applies the method and runs AdamW
steps until `max_steps` (or `epochs`) are done, evaluating every `eval_steps` with generation
and ROUGE. It writes into the run folder:

- `adapter/`: the method checkpoint of the best evaluation by `best_metric` (the final weights
  when evaluation is off), in the layout of `sumtune.methods.save_method`;
- `predictions.jsonl`: the validation predictions of that same best model;
- `checkpoints/step-N/`: resumable checkpoints (see `sumtune.train.checkpoint`);
- `metrics.jsonl` (one record per log or evaluation), `metrics.json` (final, best and run totals),
  `config.yaml` (the resolved config and the base model identity), `tensorboard/`.

Data parallelism comes from `accelerate launch`: each process computes the same batch order
and takes its own slice (see `BatchPlan`), and `accelerate` wraps the model in
DistributedDataParallel. With one process the loop is plain PyTorch: no wrapper, no sampler.

NOTE: the tests run on CPUs only (one process, and two with gloo). The CUDA paths (NCCL process
groups, bf16 autocast on a GPU, CUDA peak memory) have not been run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sumtune import __version__
from sumtune.data import write_jsonl
from sumtune.errors import ConfigError, SumtuneError
from sumtune.evaluate import autocast_context, generate_summaries, prediction_records, score_predictions
from sumtune.train import prepare
from sumtune.train.batching import BatchPlan, Encoded, collate, count_tokens, encode_examples
from sumtune.train.checkpoint import (
    TrainerState, checkpoint_dirs, load_trainable, load_training_state, rng_states, save_checkpoint,
)
from sumtune.train.config import TrainConfig
from sumtune.train.tracking import MetricsLog, ProgressBar, format_report, peak_memory_mb

logger = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"


class StopTraining(Exception):
    """Raised by a callback to end training cleanly after the current step (final evaluation and save still run)."""


class NonFiniteLossError(SumtuneError):
    """The loss or gradient norm became NaN or infinite; the weights of that step were not applied."""


@dataclass
class TrainResult:
    """Outcome of `train()`. Metric keys are `eval/rouge1`, `eval/rouge2`, `eval/rougeL`, `eval/rougeLsum`,
    `eval/loss` and `eval/gen_len` (mean words per generated summary)."""

    run_dir: Path
    best_metrics: dict[str, float]
    best_step: int | None
    final_metrics: dict[str, float]
    final_step: int
    wall_time_s: float
    train_tokens_per_second: float
    peak_memory_mb: float
    trainable_params: int
    total_params: int
    checkpoint_size_bytes: int
    stopped_early: bool  # True when training ended before its planned steps (patience, callback or time limit)
    stop_reason: str | None = None
    report: str = ""
    is_main_process: bool = True  # False on the other processes of a data-parallel run


def train(config: TrainConfig, callbacks: Sequence[Any] = ()) -> TrainResult:
    """Train `config.method` on `config.model` and `config.data`; see the module docstring for the outputs.

    Callbacks are objects with any of `on_log(step, record)`, `on_evaluate(step, metrics)` and
    `on_step_end(step)`; a callback may raise `StopTraining`. With several processes every
    process calls its callbacks with the same values, so they must decide alike.
    Raises ConfigError (all invalid values at once), DataError, CheckpointError, or
    NonFiniteLossError when the loss diverges.
    """
    problems = config.validate()
    if problems:
        raise ConfigError(problems)
    return Trainer(config, callbacks).fit()


@dataclass
class _Window:
    """Accumulators between two log steps."""

    loss_sum: float = 0.0
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0
    grad_norm: float = 0.0
    lr: float = 0.0

    def reset(self) -> None:
        self.loss_sum, self.steps, self.tokens, self.seconds = 0.0, 0, 0, 0.0


@dataclass
class _Session:
    """Counters of this process's session (a resumed run starts a new session)."""

    started: float = field(default_factory=time.perf_counter)
    train_seconds: float = 0.0
    tokens: int = 0
    stop_reason: str | None = None


class Trainer:
    def __init__(self, config: TrainConfig, callbacks: Sequence[Any]):
        from accelerate import Accelerator

        self.config = config
        self.callbacks = list(callbacks)
        self.output_dir = Path(config.output_dir)
        # mixed_precision="no" because the loop applies bf16 autocast itself, the same way with one
        # process or several. accelerate forms a CPU process group (gloo) only with cpu=True, so a
        # launch of several processes on a machine without CUDA sets it.
        launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.accelerator = Accelerator(mixed_precision="no", cpu=launched and not torch.cuda.is_available())
        self.is_main = self.accelerator.is_main_process
        self.rank = self.accelerator.process_index
        self.world = self.accelerator.num_processes
        self.device = self.accelerator.device
        self.session = _Session()
        self.window = _Window()

    # -- setup -----------------------------------------------------------------------------------

    def setup(self) -> None:
        """Load and check everything, apply the method, and restore a checkpoint when resuming."""
        from sumtune.methods import apply_method, count_parameters

        config = self.config
        resume_from = prepare.check_output_dir(config)
        self.method_config = config.method_config()
        train_examples, self.eval_examples = prepare.load_splits(config)
        loaded = prepare.load_base(config)
        self.tokenizer, self.base_model, self.fingerprint = loaded.tokenizer, loaded.base_model, loaded.fingerprint
        if resume_from is not None:
            prepare.check_same_base(self.output_dir, self.base_model, self.fingerprint)
        self.train_data = encode_examples(self.tokenizer, train_examples, config.source_prefix,
                                          config.max_source_length, config.max_target_length)
        self.eval_data = encode_examples(self.tokenizer, self.eval_examples, config.source_prefix,
                                         config.max_source_length, config.max_target_length)

        model = loaded.model
        if config.dropout_rate is not None:
            prepare.set_dropout(model, config.dropout_rate)
        prepare.seed_everything(config.seed)  # identical method initialization on every process
        apply_method(model, self.method_config, tokenizer=self.tokenizer)
        self.trainable_params, self.total_params = count_parameters(model)
        self.trainable_names = {name for name, _ in prepare.trainable_parameters(model)}
        if resume_from is not None:
            load_trainable(resume_from, model, self.trainable_names)
        model.to(self.device)

        self.plan = BatchPlan(tuple(len(item.input_ids) for item in self.train_data), config.batch_size,
                              self.world, config.gradient_accumulation_steps, config.seed)
        self.total_steps = prepare.total_steps(config, self.plan.steps_per_epoch)
        self.model = self.accelerator.prepare(model)
        self.raw_model = self.accelerator.unwrap_model(self.model)
        self.parameters = [parameter for _, parameter in prepare.trainable_parameters(self.raw_model)]
        self.optimizer = prepare.build_optimizer(self.raw_model, config)
        self.scheduler = prepare.build_scheduler(self.optimizer, config, self.total_steps)

        if resume_from is not None:
            self.state = load_training_state(resume_from, self.optimizer, self.scheduler, self.rank)
            self._note_resume(resume_from)
            if self.state.step_in_epoch >= self.plan.steps_per_epoch:
                # The data shrank since the checkpoint (for example a smaller max_train_samples).
                self.state.epoch, self.state.step_in_epoch = self.state.epoch + 1, 0
        else:
            self.state = TrainerState(world_size=self.world)
            prepare.seed_everything(config.seed + self.rank)  # dropout differs between processes
        self.last_saved_step = self.state.step if resume_from is not None else None

        if self.is_main:
            prepare.clear_run(self.output_dir, resuming=resume_from is not None)
            self._write_config()
        self.accelerator.wait_for_everyone()
        self.log = MetricsLog(self.output_dir, enabled=self.is_main, tensorboard=config.tensorboard,
                              resume_step=self.state.step if resume_from is not None else None)

    def _note_resume(self, checkpoint: Path) -> None:
        if self.state.world_size != self.world:
            logger.warning("resuming a run saved with %d processes on %d: the batch order changes from here on",
                           self.state.world_size, self.world)
        logger.info("resuming from %s at step %d", checkpoint, self.state.step)

    def _write_config(self) -> None:
        resolved = TrainConfig.from_dict({
            **self.config.to_dict(),
            "model": self.base_model,
            "method_options": self.method_config.to_dict(),
        })
        extra = {"base_model": {"name_or_path": self.base_model, "fingerprint": self.fingerprint},
                 "sumtune_version": __version__}
        (self.output_dir / "config.yaml").write_text(resolved.to_yaml(extra), encoding="utf-8")

    # -- main loop -------------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        self.setup()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.progress = ProgressBar(self.total_steps, self.state.step, enabled=self.config.progress_bar and self.is_main)
        try:
            self._run_steps()
            self._finish_training()
        finally:
            self.progress.close()
            self.log.close()
        return self._result()

    def _run_steps(self) -> None:
        config = self.config
        groups, groups_epoch = None, None
        while self.state.step < self.total_steps and self.session.stop_reason is None:
            if groups_epoch != self.state.epoch:
                groups, groups_epoch = self.plan.epoch_groups(self.state.epoch), self.state.epoch
                epoch_order = [index for group in groups for index in group]
            micro_batches = self.plan.micro_batches(groups[self.state.step_in_epoch], self.rank, epoch_order)

            started = time.perf_counter()
            loss, tokens, grad_norm = self._train_step(micro_batches)
            elapsed = time.perf_counter() - started
            self._advance(tokens, elapsed)
            self.window.loss_sum += loss
            self.window.grad_norm = grad_norm
            self.window.steps += 1
            self.progress.update()

            step = self.state.step
            if step % config.logging_steps == 0 or step == self.total_steps:
                self._log_training(step)
            if config.evaluation_enabled and config.eval_steps and step % config.eval_steps == 0:
                self._evaluate_and_select(step)
            if config.save_steps and step % config.save_steps == 0:
                self._save_checkpoint()
            self._call("on_step_end", step)
            self._check_time_limit()

    def _advance(self, tokens: int, seconds: float) -> None:
        state = self.state
        state.step += 1
        state.step_in_epoch += 1
        if state.step_in_epoch == self.plan.steps_per_epoch:
            state.epoch += 1
            state.step_in_epoch = 0
        state.tokens_seen += tokens
        state.train_seconds += seconds
        self.session.tokens += tokens
        self.session.train_seconds += seconds
        self.window.tokens += tokens
        self.window.seconds += seconds

    def _train_step(self, micro_batches: list[list[int]]) -> tuple[float, int, float]:
        """Run one optimizer step; return (mean loss over processes, this process's tokens, grad norm)."""
        self.model.train()
        count = len(micro_batches)
        step_loss = torch.zeros((), device=self.device)
        tokens = 0
        for index, indices in enumerate(micro_batches):
            batch = collate([self.train_data[i] for i in indices], self.tokenizer.pad_token_id)
            tokens += count_tokens(batch)
            batch = {key: value.to(self.device) for key, value in batch.items()}
            # Gradients are all-reduced only on the last micro-batch of a step.
            sync = self.accelerator.no_sync(self.model) if index < count - 1 else contextlib.nullcontext()
            with sync:
                with autocast_context(self.device, self.config.precision):
                    output = self.model(**batch, label_smoothing=self.config.label_smoothing)
                loss = output.loss / count
                self.accelerator.backward(loss)
            step_loss += loss.detach()

        max_norm = self.config.max_grad_norm if self.config.max_grad_norm > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.parameters, max_norm))
        # One host sync per step: the check must run before optimizer.step() so that a NaN never
        # reaches the weights (and the next checkpoint).
        loss_value = float(self.accelerator.reduce(step_loss, "mean")) if self.world > 1 else float(step_loss)
        if not (math.isfinite(loss_value) and math.isfinite(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            raise self._divergence_error(loss_value, grad_norm)
        self.window.lr = self.scheduler.get_last_lr()[0]  # the rate this step uses, before the schedule moves on
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_value, tokens, grad_norm

    def _divergence_error(self, loss: float, grad_norm: float) -> NonFiniteLossError:
        step = self.state.step + 1
        saved = checkpoint_dirs(self.output_dir)
        where = (f"the last good checkpoint is {saved[-1][1]} (continue from it with --resume)" if saved
                 else "no checkpoint was written yet")
        lr = self.scheduler.get_last_lr()[0]
        return NonFiniteLossError(
            f"training stopped at step {step}: the loss is {loss} and the gradient norm {grad_norm} (learning rate "
            f"{lr:.3g}); the update of this step was not applied and {where}. Lower --learning-rate, keep "
            "--max-grad-norm above 0, or use --precision fp32"
        )

    def _check_time_limit(self) -> None:
        limit = self.config.max_train_minutes
        if limit is None:
            return
        over = time.perf_counter() - self.session.started >= limit * 60
        if self.world > 1:
            from accelerate.utils import broadcast

            # The main process decides, so that every process stops after the same step.
            flag = broadcast(torch.tensor([1 if over else 0], device=self.device))
            over = bool(flag.item())
        if over and self.session.stop_reason is None:
            self.session.stop_reason = f"time limit of {limit:g} minutes reached"

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            method = getattr(callback, hook, None)
            if method is None:
                continue
            try:
                method(*args)
            except StopTraining as stop:
                if self.session.stop_reason is None:
                    self.session.stop_reason = str(stop) or f"stopped by {type(callback).__name__}"

    # -- logging ---------------------------------------------------------------------------------

    def _log_training(self, step: int) -> None:
        window = self.window
        tokens = window.tokens
        if self.world > 1:
            tokens = int(self.accelerator.reduce(torch.tensor(tokens, device=self.device), "sum").item())
        tokens_per_second = tokens / window.seconds if window.seconds > 0 else 0.0
        values = {
            "train/loss": window.loss_sum / max(1, window.steps),
            "train/lr": window.lr,
            "train/grad_norm": window.grad_norm,
            "train/tokens_per_second": tokens_per_second,
            "train/epoch": self.state.epoch + self.state.step_in_epoch / self.plan.steps_per_epoch,
        }
        window.reset()
        record = self.log.write(step, values)
        self.progress.show(values["train/loss"], values["train/lr"], tokens_per_second)
        self._call("on_log", step, record)

    # -- evaluation ------------------------------------------------------------------------------

    def _evaluate_and_select(self, step: int) -> None:
        """Evaluate, keep the adapter if it is the best so far, log, and apply early stopping."""
        metrics, predictions = self._evaluate()
        state = self.state
        score = metrics[f"eval/{self.config.best_metric}"]
        improved = state.best_score is None or score > state.best_score
        if improved:
            state.best_score, state.best_step, state.best_metrics = score, step, dict(metrics)
            state.evaluations_without_improvement = 0
            self._save_adapter(predictions)
        else:
            state.evaluations_without_improvement += 1
        state.last_eval_step, state.last_metrics = step, dict(metrics)

        record = self.log.write(step, metrics)
        marker = " (new best)" if improved else ""
        if self.is_main:
            scores = ", ".join(f"{key.removeprefix('eval/')} {value:.2f}" for key, value in metrics.items())
            self.progress.write(f"evaluation at step {step}: {scores}{marker}")
        self._call("on_log", step, record)
        self._call("on_evaluate", step, dict(metrics))
        patience = self.config.early_stopping_patience
        if patience and state.evaluations_without_improvement >= patience and self.session.stop_reason is None:
            self.session.stop_reason = (
                f"early stopping: no better {self.config.best_metric} in {patience} evaluations"
            )

    def _evaluate(self) -> tuple[dict[str, float], list[str] | None]:
        """Generate and score the validation set, sharded over processes; metrics reach every process."""
        model = self.raw_model
        model.eval()
        indices = list(range(self.rank, len(self.eval_examples), self.world))
        texts = [self.eval_examples[i].text for i in indices]
        summaries = generate_summaries(
            model, self.tokenizer, texts, source_prefix=self.config.source_prefix,
            max_source_length=self.config.max_source_length, generation=self.config.generation_config(),
            batch_size=self.config.eval_batch_size, device=self.device, precision=self.config.precision,
        )
        loss_sum, loss_tokens = self._evaluation_loss([self.eval_data[i] for i in indices])
        model.train()

        pairs = list(zip(indices, summaries))
        if self.world > 1:
            from accelerate.utils import gather_object

            pairs = gather_object(pairs)
            totals = self.accelerator.reduce(torch.tensor([loss_sum, loss_tokens], device=self.device), "sum")
            loss_sum, loss_tokens = float(totals[0]), float(totals[1])
        predictions = [summary for _, summary in sorted(pairs)]
        metrics = None
        if self.is_main:
            result, _, gen_len = score_predictions(predictions, [e.summary for e in self.eval_examples], bootstrap=0)
            metrics = {f"eval/{name}": float(value) for name, value in result.means.items()}
            metrics["eval/loss"] = loss_sum / max(1.0, loss_tokens)
            metrics["eval/gen_len"] = gen_len
        if self.world > 1:
            from accelerate.utils import broadcast_object_list

            metrics = broadcast_object_list([metrics])[0]
        return metrics, predictions if self.is_main else None

    @torch.no_grad()
    def _evaluation_loss(self, data: list[Encoded]) -> tuple[float, float]:
        """Return (sum of token losses, number of target tokens) without label smoothing."""
        loss_sum, tokens = 0.0, 0.0
        for start in range(0, len(data), self.config.eval_batch_size):
            batch = collate(data[start : start + self.config.eval_batch_size], self.tokenizer.pad_token_id)
            count = float((batch["labels"] != -100).sum())
            batch = {key: value.to(self.device) for key, value in batch.items()}
            with autocast_context(self.device, self.config.precision):
                output = self.raw_model(**batch)
            loss_sum += float(output.loss) * count
            tokens += count
        return loss_sum, tokens

    # -- saving ----------------------------------------------------------------------------------

    def _save_adapter(self, predictions: list[str] | None) -> None:
        """Write the method checkpoint to OUTPUT_DIR/adapter and, after an evaluation, its predictions."""
        from sumtune.methods import save_method

        if self.is_main:
            save_method(self.raw_model, self.method_config, self.output_dir / ADAPTER_DIR,
                        base_model=self.base_model, tokenizer=self.tokenizer)
            if predictions is not None:
                write_jsonl(self.output_dir / "predictions.jsonl", prediction_records(self.eval_examples, predictions))
        self.accelerator.wait_for_everyone()

    def _save_checkpoint(self) -> None:
        states = [rng_states()]
        if self.world > 1:
            from accelerate.utils import gather_object

            states = gather_object(states)
        if self.is_main:
            trainable = {name: parameter for name, parameter in self.raw_model.named_parameters()
                         if name in self.trainable_names}
            save_checkpoint(self.output_dir, self.state, trainable, self.optimizer, self.scheduler, states,
                            keep=self.config.save_total_limit)
        self.accelerator.wait_for_everyone()
        self.last_saved_step = self.state.step

    def _finish_training(self) -> None:
        """Final evaluation and checkpoint, metrics.json and the closing report."""
        self.all_session_tokens = self.session.tokens
        if self.world > 1:
            total = self.accelerator.reduce(torch.tensor(self.session.tokens, device=self.device), "sum")
            self.all_session_tokens = int(total.item())
        step = self.state.step
        if self.window.steps:
            self._log_training(step)  # the steps since the last log step of a run that stopped early
        if self.config.evaluation_enabled and self.state.last_eval_step != step:
            self._evaluate_and_select(step)
        if not self.config.evaluation_enabled:
            self._save_adapter(predictions=None)
        if self.last_saved_step != step:
            self._save_checkpoint()
        if self.is_main:
            self._write_metrics_summary()

    def _write_metrics_summary(self) -> None:
        state = self.state
        memory, _ = peak_memory_mb(self.device)
        summary = {
            "final": {"step": state.step, **state.last_metrics},
            "best": {"step": state.best_step, "metric": f"eval/{self.config.best_metric}", **state.best_metrics},
            "train": {
                "steps": state.step,
                "planned_steps": self.total_steps,
                "stop_reason": self.session.stop_reason,
                "wall_time_s": time.perf_counter() - self.session.started,
                "tokens_per_second": self._tokens_per_second(),
                "peak_memory_mb": memory,
                "trainable_params": self.trainable_params,
                "total_params": self.total_params,
                "world_size": self.world,
            },
        }
        (self.output_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")

    def _tokens_per_second(self) -> float:
        """Non-padding tokens of all processes per second of this process's training time (evaluation excluded)."""
        seconds = self.session.train_seconds
        return self.all_session_tokens / seconds if seconds > 0 else 0.0

    def _result(self) -> TrainResult:
        state = self.state
        wall = time.perf_counter() - self.session.started
        memory, memory_kind = peak_memory_mb(self.device)
        adapter = self.output_dir / ADAPTER_DIR
        report = format_report(
            steps=state.step, wall_time_s=wall, tokens_per_second=self._tokens_per_second(), peak_memory=memory,
            memory_kind=memory_kind, best_metric=self.config.best_metric, best_step=state.best_step,
            best_metrics=state.best_metrics, adapter_dir=adapter, stop_reason=self.session.stop_reason,
        )
        size = sum(path.stat().st_size for path in adapter.rglob("*") if path.is_file()) if adapter.is_dir() else 0
        return TrainResult(
            run_dir=self.output_dir, best_metrics=dict(state.best_metrics), best_step=state.best_step,
            final_metrics=dict(state.last_metrics), final_step=state.step, wall_time_s=wall,
            train_tokens_per_second=self._tokens_per_second(), peak_memory_mb=memory,
            trainable_params=self.trainable_params, total_params=self.total_params, checkpoint_size_bytes=size,
            stopped_early=state.step < self.total_steps, stop_reason=self.session.stop_reason, report=report,
            is_main_process=self.is_main,
        )

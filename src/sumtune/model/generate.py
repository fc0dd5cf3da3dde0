"""Greedy and beam-search decoding with a key/value cache, matching transformers' `generate`.

Every choice that decides which tokens come out follows transformers 5.x, so outputs agree token
for token. Beam search applies log-softmax before the logits processors and keeps 2 * num_beams
candidates per step. A finished hypothesis scores sum_logprobs / generated_length ** length_penalty.
Early stopping uses the same heuristic: with `early_stopping=False` the search stops once no running
beam, scored at the current length, can beat the worst finished one. With `True` it stops once
num_beams hypotheses are finished, and with `"never"` it uses only the canonical bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from sumtune.errors import ConfigError
from sumtune.model.t5 import T5, DecoderCache, EncoderOutput, PrefixKV

NEG_INF = float("-inf")
# transformers marks impossible beams with -1e9 rather than -inf so that sums stay ordered.
IMPOSSIBLE = -1.0e9


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings; every one is explicit, none is read from a checkpoint."""

    max_new_tokens: int = 128
    min_new_tokens: int = 0
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    no_repeat_ngram_size: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.max_new_tokens < 1:
            problems.append(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            problems.append(
                f"min_new_tokens must be between 0 and max_new_tokens ({self.max_new_tokens}), got {self.min_new_tokens}"
            )
        if self.num_beams < 1:
            problems.append(f"num_beams must be at least 1, got {self.num_beams}")
        if self.no_repeat_ngram_size < 0:
            problems.append(f"no_repeat_ngram_size must be 0 (off) or positive, got {self.no_repeat_ngram_size}")
        if self.early_stopping not in (True, False, "never"):
            problems.append(f"early_stopping must be true, false or 'never', got {self.early_stopping!r}")
        if problems:
            raise ConfigError(problems)


def ban_repeated_ngrams(scores: Tensor, sequences: Tensor, n: int) -> Tensor:
    """Set to -inf every token that would complete an n-gram already present in its sequence.

    `sequences` (rows, length) includes the decoder start token, as in transformers.
    """
    rows, length = sequences.shape
    if n <= 0 or length + 1 < n:
        return scores
    if n == 1:
        return scores.scatter(1, sequences, NEG_INF)
    # Windows of n-1 tokens at every start position; a window equal to the last n-1 tokens means
    # the token after it must not come next.
    windows = sequences.unfold(1, n - 1, 1)[:, : length - n + 1]  # (rows, starts, n-1)
    last = sequences[:, length - n + 1 :]  # (rows, n-1)
    matches = (windows == last[:, None, :]).all(-1)  # (rows, starts)
    if not matches.any():
        return scores
    following = sequences[:, n - 1 :]  # token after each window
    row_index, start_index = matches.nonzero(as_tuple=True)
    scores = scores.clone()
    scores[row_index, following[row_index, start_index]] = NEG_INF
    return scores


def process_scores(scores: Tensor, sequences: Tensor, config: GenerationConfig, eos_id: int) -> Tensor:
    generated = sequences.shape[1] - 1
    if generated < config.min_new_tokens:
        scores = scores.clone()
        scores[:, eos_id] = NEG_INF
    if config.no_repeat_ngram_size:
        scores = ban_repeated_ngrams(scores, sequences, config.no_repeat_ngram_size)
    return scores


class Stepper:
    """Compute next-token logits for (rows, length) decoder sequences, with or without a cache.

    `encoded` and `prefixes` cover the examples, and there are `num_beams` consecutive rows per
    example. Cross-attention keys and values are computed once per example and shared by its rows.
    """

    def __init__(self, model: T5, encoded: EncoderOutput, prefixes: PrefixKV, max_length: int, use_cache: bool,
                 num_beams: int = 1):
        self.model = model
        self.use_cache = use_cache
        if use_cache:
            self.cache: DecoderCache | None = model.start_generation(encoded, prefixes, max_length, num_beams)
        else:
            self.cache = None
            self.self_prefixes = prefixes.decoder_self
            if self.self_prefixes is not None and num_beams > 1:
                self.self_prefixes = [
                    (key.repeat_interleave(num_beams, 0), value.repeat_interleave(num_beams, 0))
                    for key, value in self.self_prefixes
                ]
            self.cross_kv = model.decoder.cross_key_values(encoded.hidden, prefixes.decoder_cross)
            self.cross_bias = model.cross_bias(encoded.mask, prefixes, encoded.hidden.dtype)

    def __call__(self, sequences: Tensor) -> Tensor:
        if self.cache is not None:
            return self.model.decode_step(sequences[:, -1:], self.cache)[:, -1].float()
        hidden = self.model.decoder(self.model.shared(sequences), self.cross_kv, self.cross_bias, self.self_prefixes)
        return self.model.lm_logits(hidden[:, -1:])[:, -1].float()

    def reorder(self, index: Tensor) -> None:
        """Reorder the per-row state after beam search picks new beams; `index` stays within each example."""
        if self.cache is not None:
            self.cache.reorder(index)
        elif self.self_prefixes is not None:
            # Without a cache only the self-attention prefixes are per row; cross-attention state is per example.
            self.self_prefixes = [(key[index], value[index]) for key, value in self.self_prefixes]


@torch.no_grad()
def generate(
    model: T5,
    input_ids: Tensor,
    attention_mask: Tensor,
    config: GenerationConfig = GenerationConfig(),
    use_cache: bool = True,
) -> list[list[int]]:
    """Generate token ids for a batch; each result excludes the start token and ends with EOS if one was produced."""
    was_training = model.training
    model.eval()
    try:
        prefixes = model.prefixes(input_ids.shape[0])
        encoded = model.encode(input_ids, attention_mask, prefixes)
        max_length = config.max_new_tokens + 1
        stepper = Stepper(model, encoded, prefixes, max_length, use_cache, config.num_beams)
        if config.num_beams == 1:
            return greedy_search(stepper, input_ids.shape[0], config, model.config, input_ids.device)
        return beam_search(stepper, input_ids.shape[0], config, model.config, input_ids.device)
    finally:
        model.train(was_training)


def greedy_search(stepper: Callable, batch: int, config: GenerationConfig, model_config, device) -> list[list[int]]:
    eos, pad = model_config.eos_token_id, model_config.pad_token_id
    sequences = torch.full((batch, 1), model_config.decoder_start_token_id, dtype=torch.long, device=device)
    running = torch.ones(batch, dtype=torch.bool, device=device)
    for _ in range(config.max_new_tokens):
        scores = process_scores(stepper(sequences), sequences, config, eos)
        next_tokens = torch.where(running, scores.argmax(-1), pad)
        sequences = torch.cat([sequences, next_tokens[:, None]], dim=1)
        running &= next_tokens != eos
        if not running.any():
            break
    return [trim_after_eos(row[1:].tolist(), eos) for row in sequences]


def trim_after_eos(tokens: list[int], eos: int) -> list[int]:
    return tokens[: tokens.index(eos) + 1] if eos in tokens else tokens


def beam_search(stepper: Stepper, batch: int, config: GenerationConfig, model_config, device) -> list[list[int]]:
    """Beam search over `batch` examples, each with `config.num_beams` running and finished hypotheses."""
    beams = config.num_beams
    candidates = 2 * beams  # enough that num_beams survive even if num_beams candidates end in EOS
    eos = model_config.eos_token_id
    max_length = config.max_new_tokens + 1
    offsets = (torch.arange(batch, device=device) * beams)[:, None]

    running = torch.full((batch, beams, 1), model_config.decoder_start_token_id, dtype=torch.long, device=device)
    running_scores = torch.zeros(batch, beams, device=device)
    running_scores[:, 1:] = IMPOSSIBLE  # all beams start identical: let only the first one expand
    finished = torch.full((batch, beams, max_length), eos, dtype=torch.long, device=device)
    finished_scores = torch.full((batch, beams), IMPOSSIBLE, device=device)
    is_finished = torch.zeros(batch, beams, dtype=torch.bool, device=device)
    can_improve = torch.ones(batch, 1, dtype=torch.bool, device=device)
    keep_top = torch.arange(candidates, device=device) < beams

    length = 1
    while True:
        flat = running.view(batch * beams, length)
        log_probs = F.log_softmax(stepper(flat), dim=-1)
        log_probs = process_scores(log_probs, flat, config, eos)
        vocab = log_probs.shape[-1]
        totals = (log_probs.view(batch, beams, vocab) + running_scores[:, :, None]).view(batch, beams * vocab)

        # Expand: the best 2 * num_beams (beam, token) continuations per example.
        top_scores, top_index = torch.topk(totals, candidates)
        source_beam = top_index // vocab
        tokens = top_index % vocab
        extended = torch.cat([torch.gather(running, 1, source_beam[:, :, None].expand(-1, -1, length)), tokens[:, :, None]], 2)
        ends = (tokens == eos) | (length + 1 >= max_length)

        # Continue: the best num_beams continuations that did not end.
        alive_scores = top_scores + ends.float() * IMPOSSIBLE
        next_index = torch.topk(alive_scores, beams)[1]
        running = torch.gather(extended, 1, next_index[:, :, None].expand(-1, -1, length + 1))
        running_scores = torch.gather(alive_scores, 1, next_index)
        origin = torch.gather(source_beam, 1, next_index)

        # Finish: endings among the top num_beams candidates compete with earlier finished hypotheses.
        new_scores = top_scores / (length**config.length_penalty)
        just_finished = ends & keep_top[None, :]
        all_full = is_finished.all(-1, keepdim=True) & (config.early_stopping is True)
        new_scores = new_scores + all_full.float() * IMPOSSIBLE
        new_scores = new_scores + (~can_improve).float() * IMPOSSIBLE
        new_scores = new_scores + (~just_finished).float() * IMPOSSIBLE
        padded = F.pad(extended, (0, max_length - length - 1), value=eos)
        merged_scores = torch.cat([finished_scores, new_scores], 1)
        best = torch.topk(merged_scores, beams)[1]
        finished = torch.gather(torch.cat([finished, padded], 1), 1, best[:, :, None].expand(-1, -1, max_length))
        finished_scores = torch.gather(merged_scores, 1, best)
        is_finished = torch.gather(torch.cat([is_finished, just_finished], 1), 1, best)

        stepper.reorder((origin + offsets).view(-1))
        length += 1
        can_improve = can_improve & still_improvable(running_scores, finished_scores, is_finished, length, max_length, config)
        stop_early = bool(is_finished.all()) and config.early_stopping is True
        if not can_improve.any() or stop_early or bool(ends.all()):
            break

    return [trim_after_eos(finished[index, 0, 1:].tolist(), eos) for index in range(batch)]


def still_improvable(running_scores, finished_scores, is_finished, length, max_length, config) -> Tensor:
    """Return whether the best running beam could still beat the worst finished hypothesis, per example."""
    if config.early_stopping == "never" and config.length_penalty > 0.0:
        best_length = max_length - 1
    else:
        best_length = length - 1
    best_running = running_scores[:, :1] / (best_length**config.length_penalty)
    worst_finished = torch.where(is_finished, finished_scores.min(1, keepdim=True)[0], IMPOSSIBLE)
    return (best_running > worst_finished).any(-1, keepdim=True)

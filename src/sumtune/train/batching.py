"""Tokenized examples, the length-grouped batch order and padding into tensors.

The order is a pure function of (seed, epoch, lengths, batch geometry), so a resumed run can
rebuild it and skip the optimizer steps it already took. It is computed in optimizer-step
groups: every process computes the same groups and takes its own slice of each micro-batch.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from sumtune.data import Example

# Step groups per sorting window. A window of shuffled examples is sorted by length before it is
# cut into step groups, so batches contain similar lengths while the data stays mixed across
# windows. 50 is the cap that transformers' `get_length_grouped_indices` puts on its mega-batches.
GROUPS_PER_WINDOW = 50
LABEL_PAD = -100  # ignored by the cross-entropy loss


@dataclass(frozen=True)
class Encoded:
    """One tokenized example: source ids (prefix + article, EOS last) and target ids (summary, EOS last)."""

    input_ids: list[int]
    labels: list[int]


def encode_examples(
    tokenizer, examples: Sequence[Example], source_prefix: str, max_source_length: int, max_target_length: int,
    chunk_size: int = 1000,
) -> list[Encoded]:
    """Tokenize articles with the source prefix and their summaries, truncating both."""
    encoded: list[Encoded] = []
    for start in range(0, len(examples), chunk_size):
        chunk = examples[start : start + chunk_size]
        sources = tokenizer(
            [source_prefix + example.text for example in chunk], max_length=max_source_length, truncation=True
        )["input_ids"]
        targets = tokenizer(
            [example.summary for example in chunk], max_length=max_target_length, truncation=True
        )["input_ids"]
        encoded.extend(Encoded(list(source), list(target)) for source, target in zip(sources, targets))
    return encoded


@dataclass(frozen=True)
class BatchPlan:
    """The division of examples into optimizer steps, micro-batches and per-process slices.

    One optimizer step consumes a *step group* of up to `batch_size * world_size * accumulation`
    examples. Micro-batch i of the group is the slice [i * batch_size * world_size, ...) of it,
    and process r takes the r-th contiguous part of that slice. With world_size=1 and
    accumulation=2, a step therefore trains on exactly the same two batches as with world_size=2
    and accumulation=1, so data-parallel runs are comparable with single-process ones.
    """

    lengths: tuple[int, ...]
    batch_size: int
    world_size: int
    accumulation: int
    seed: int

    @property
    def group_size(self) -> int:
        return self.batch_size * self.world_size * self.accumulation

    @property
    def steps_per_epoch(self) -> int:
        return -(-len(self.lengths) // self.group_size)

    def epoch_groups(self, epoch: int) -> list[list[int]]:
        """Return the step groups of one epoch: shuffled, sorted by length inside windows, then shuffled again."""
        rng = random.Random(f"sumtune-batches-{self.seed}-{epoch}")
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        window = self.group_size * GROUPS_PER_WINDOW
        groups: list[list[int]] = []
        for start in range(0, len(order), window):
            sorted_window = sorted(order[start : start + window], key=lambda index: -self.lengths[index])
            groups.extend(sorted_window[i : i + self.group_size] for i in range(0, len(sorted_window), self.group_size))
        rng.shuffle(groups)
        # The group with the longest source goes first, so an out-of-memory error shows at step 1.
        longest = max(range(len(groups)), key=lambda i: self.lengths[groups[i][0]])
        groups.insert(0, groups.pop(longest))
        return groups

    def micro_batches(self, group: list[int], rank: int, epoch_order: list[int]) -> list[list[int]]:
        """Return this process's example indices for each micro-batch of a step group.

        A short last slice is split as evenly as possible. With several processes, a slice with
        fewer examples than processes is padded with the first examples of the epoch, as
        `DistributedSampler` pads, so that no process is left without a batch.
        """
        span = self.batch_size * self.world_size
        batches = []
        for start in range(0, len(group), span):
            piece = list(group[start : start + span])
            if len(piece) < self.world_size:
                piece += epoch_order[: self.world_size - len(piece)]
            batches.append(split_evenly(piece, self.world_size)[rank])
        return batches


def split_evenly(items: list[int], parts: int) -> list[list[int]]:
    """Cut `items` into `parts` contiguous pieces whose sizes differ by at most one."""
    size, extra = divmod(len(items), parts)
    pieces, start = [], 0
    for index in range(parts):
        stop = start + size + (1 if index < extra else 0)
        pieces.append(items[start:stop])
        start = stop
    return pieces


def collate(examples: Sequence[Encoded], pad_id: int) -> dict[str, Tensor]:
    """Pad a batch to its longest source and target: sources with `pad_id`, labels with -100."""
    source_width = max(len(example.input_ids) for example in examples)
    target_width = max(len(example.labels) for example in examples)
    input_ids = torch.full((len(examples), source_width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), source_width), dtype=torch.long)
    labels = torch.full((len(examples), target_width), LABEL_PAD, dtype=torch.long)
    for row, example in enumerate(examples):
        input_ids[row, : len(example.input_ids)] = torch.tensor(example.input_ids)
        attention_mask[row, : len(example.input_ids)] = 1
        labels[row, : len(example.labels)] = torch.tensor(example.labels)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def count_tokens(batch: dict[str, Tensor]) -> int:
    """Return the non-padding source and target tokens of a batch."""
    return int(batch["attention_mask"].sum()) + int((batch["labels"] != LABEL_PAD).sum())

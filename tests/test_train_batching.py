"""Tests for the batch order, padding and learning-rate schedules of the training loop."""

from __future__ import annotations

import math
import random
import statistics

import pytest
import torch

from sumtune.train.batching import BatchPlan, Encoded, collate, count_tokens, split_evenly
from sumtune.train.prepare import lr_multiplier


def make_plan(count=103, batch_size=4, world_size=1, accumulation=1, seed=0) -> BatchPlan:
    rng = random.Random(7)
    lengths = tuple(rng.randint(5, 500) for _ in range(count))
    return BatchPlan(lengths, batch_size, world_size, accumulation, seed)


def test_epoch_covers_every_example_once():
    plan = make_plan()
    groups = plan.epoch_groups(0)
    flat = [index for group in groups for index in group]
    assert sorted(flat) == list(range(103))
    assert len(groups) == plan.steps_per_epoch == math.ceil(103 / 4)


def test_order_depends_only_on_seed_and_epoch():
    assert make_plan().epoch_groups(0) == make_plan().epoch_groups(0)
    assert make_plan().epoch_groups(0) != make_plan().epoch_groups(1)
    assert make_plan().epoch_groups(0) != make_plan(seed=1).epoch_groups(0)


def test_batches_group_similar_lengths():
    plan = make_plan(count=400)
    grouped = [statistics.pstdev([plan.lengths[i] for i in group]) for group in plan.epoch_groups(0)]
    order = list(range(400))
    random.Random(3).shuffle(order)
    shuffled = [statistics.pstdev([plan.lengths[i] for i in order[s : s + 4]]) for s in range(0, 400, 4)]
    assert statistics.mean(grouped) < statistics.mean(shuffled) / 5


def test_longest_group_comes_first():
    plan = make_plan()
    groups = plan.epoch_groups(2)
    assert plan.lengths[groups[0][0]] == max(plan.lengths)


def test_two_processes_see_the_batches_of_accumulation():
    single = make_plan(batch_size=3, world_size=1, accumulation=2)
    double = make_plan(batch_size=3, world_size=2, accumulation=1)
    assert single.epoch_groups(0) == double.epoch_groups(0)
    for group in single.epoch_groups(0):
        order = [index for g in single.epoch_groups(0) for index in g]
        micro = single.micro_batches(group, 0, order)
        per_rank = [double.micro_batches(group, rank, order) for rank in (0, 1)]
        if len(group) == 6:
            assert micro == [per_rank[0][0], per_rank[1][0]]


def test_short_group_gives_every_process_examples():
    plan = BatchPlan(tuple(range(5)), batch_size=2, world_size=4, accumulation=1, seed=0)
    order = [index for group in plan.epoch_groups(0) for index in group]
    last = [group for group in plan.epoch_groups(0) if len(group) < 8][0]
    pieces = [plan.micro_batches(last, rank, order)[0] for rank in range(4)]
    assert all(pieces)
    assert set(last) <= {index for piece in pieces for index in piece}


def test_split_evenly_sizes():
    assert [len(piece) for piece in split_evenly(list(range(7)), 3)] == [3, 2, 2]
    assert sum(split_evenly(list(range(7)), 3), []) == list(range(7))


def test_collate_pads_sources_and_labels():
    batch = collate([Encoded([5, 6, 1], [7, 1]), Encoded([5, 1], [8, 9, 10, 1])], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 1], [5, 1, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[7, 1, -100, -100], [8, 9, 10, 1]]
    assert count_tokens(batch) == 5 + 6


@pytest.mark.parametrize("kind", ["linear", "cosine", "constant"])
def test_schedule_warmup_then_decay(kind):
    factor = lr_multiplier(kind, warmup=4, total=20)
    assert [factor(step) for step in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factor(4) == pytest.approx(1.0)
    if kind == "constant":
        assert factor(19) == pytest.approx(1.0)
    else:
        assert factor(12) == pytest.approx(0.5)
        assert factor(20) == pytest.approx(0.0)
        values = [factor(step) for step in range(4, 21)]
        assert values == sorted(values, reverse=True)


def test_schedule_matches_torch_lambda_lr():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([parameter], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier("linear", 2, 10))
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [0.05, 0.1] + [0.1 * (1 - k / 8) for k in range(8)]
    assert rates == pytest.approx(expected)

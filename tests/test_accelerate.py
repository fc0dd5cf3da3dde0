"""Data-parallel training with `accelerate launch` on two CPU processes.

In each optimizer step, two processes with batches of 2 train on exactly the examples that one
process trains on with batches of 2 and 2 accumulation steps. With dropout off, both must end
with the same weights, up to the order of floating-point additions in the gradient all-reduce.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import FRANK_FILE, read_frank_articles
from sumtune.train import TrainConfig, train

pytestmark = pytest.mark.skipif(not FRANK_FILE.is_file(), reason=f"real CNN/DailyMail sample not found at {FRANK_FILE}")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Run the tiny model on one thread. Its operations are too small to gain from more, and on a
    2-core machine shared with other processes two threads made training about 10 times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

SOURCE_DIR = Path(__file__).resolve().parents[1] / "src"
SETTINGS = {
    "method": "lora", "max_steps": 3, "batch_size": 2, "learning_rate": 1e-2, "max_source_length": 64,
    "max_target_length": 16, "validation_size": 2, "eval_steps": 0, "save_steps": 0, "logging_steps": 1,
    "num_beams": 1, "max_new_tokens": 6, "dropout_rate": 0.0, "seed": 5,
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_match_one_with_accumulation(tiny_model_dir, tmp_path):
    data = tmp_path / "articles.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in read_frank_articles(14)), encoding="utf-8")
    flags = []
    for key, value in SETTINGS.items():
        flags += ["--" + key.replace("_", "-"), str(value)]
    distributed = tmp_path / "two-processes"
    # accelerate's --cpu launcher starts several processes only through MPI. --multi_gpu starts
    # them with torch's launcher, and sumtune requests a CPU (gloo) process group when no GPU exists.
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_ip", "127.0.0.1", "--main_process_port", str(free_port()),
        "-m", "sumtune", "train", "--model", str(tiny_model_dir), "--data", str(data),
        "--output-dir", str(distributed), "--no-progress-bar", *flags,
    ]
    python_path = os.pathsep.join(filter(None, [str(SOURCE_DIR), os.environ.get("PYTHONPATH")]))
    environment = {**os.environ, "PYTHONPATH": python_path, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.count("training finished") == 1  # only the main process prints the report

    state = json.loads((distributed / "checkpoints" / "step-3" / "trainer_state.json").read_text(encoding="utf-8"))
    assert state["world_size"] == 2
    assert (distributed / "checkpoints" / "step-3" / "rng_state_1.pt").is_file()

    single = tmp_path / "one-process"
    train(TrainConfig(model=str(tiny_model_dir), data=str(data), output_dir=str(single), progress_bar=False,
                      gradient_accumulation_steps=2, **SETTINGS))

    two = load_file(str(distributed / "checkpoints" / "step-3" / "model.safetensors"))
    one = load_file(str(single / "checkpoints" / "step-3" / "model.safetensors"))
    assert two.keys() == one.keys()
    for name in one:
        assert torch.allclose(two[name], one[name], rtol=1e-5, atol=1e-7), name
    # LoRA's B matrices start at zero, so nonzero values show that the steps changed the weights.
    lora_b_names = [name for name in one if name.endswith("lora_B")]
    assert lora_b_names
    assert all(one[name].abs().sum() > 0 for name in lora_b_names)

    def losses(run: Path) -> list[float]:
        lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        return [record["train/loss"] for record in map(json.loads, lines) if "train/loss" in record]

    assert losses(distributed) == pytest.approx(losses(single), rel=1e-6)

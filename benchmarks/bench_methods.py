"""Training-step time and peak memory of every sumtune method, beside peft on transformers' T5.

A step is zero_grad, forward with labels, backward and an AdamW step, on a T5 of t5-small's shape
with random weights (no download), in training mode (dropout 0.1). All configurations see the same
random token ids. Each configuration lives in its own worker process, and all workers stay alive
while the script runs one training step at a time, in rounds that visit every configuration in
alternating order. A machine whose speed drifts over minutes (other tenants, frequency changes)
therefore slows all configurations alike. Each worker reports its peak resident set size (VmHWM
in /proc/self/status), which is its configuration's own.

    python benchmarks/bench_methods.py                 # batch 8, 512 source / 128 target tokens, 2 threads
    python benchmarks/bench_methods.py --steps 5 --warmup 1
    python benchmarks/bench_methods.py --quick         # smoke run: batch 2, 64 / 16 tokens, 1 round
    python benchmarks/bench_methods.py --only sumtune-full,sumtune-lora,peft-lora

Targets checked at the end: each sumtune method no slower than its peft (or transformers) counterpart,
and prefix, prompt, adapter and LoRA at least 1.3x faster than sumtune's full fine-tuning.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_SPEEDUP_OVER_FULL = 1.3

# name -> (library, description); the order is the order of the report.
CONFIGURATIONS = {
    "sumtune-full": ("sumtune", "full fine-tuning"),
    "sumtune-prefix": ("sumtune", "prefix, 20 positions, encoder + decoder self + cross, with reparametrization MLP"),
    "sumtune-prefix-plain": ("sumtune", "prefix, 20 positions, all three kinds, no MLP"),
    "sumtune-prompt": ("sumtune", "prompt, 20 tokens"),
    "sumtune-adapter-houlsby": ("sumtune", "adapter, Houlsby placement, bottleneck 32"),
    "sumtune-adapter-parallel": ("sumtune", "adapter, parallel at feed-forward, bottleneck 32"),
    "sumtune-lora": ("sumtune", "LoRA r=8 on q, v"),
    "hf-full": ("transformers", "full fine-tuning"),
    "peft-prefix": ("peft", "prefix, 20 positions, decoder self-attention only (peft's T5 prefix)"),
    "peft-prompt": ("peft", "prompt, 20 tokens (40 allocated)"),
    "peft-lora": ("peft", "LoRA r=8 on q, v"),
}
# sumtune configuration -> the reference it must not be slower than.
COUNTERPARTS = {
    "sumtune-full": "hf-full",
    "sumtune-prompt": "peft-prompt",
    "sumtune-lora": "peft-lora",
}
MUST_BEAT_FULL = ("sumtune-prefix", "sumtune-prefix-plain", "sumtune-prompt", "sumtune-adapter-houlsby",
                  "sumtune-adapter-parallel", "sumtune-lora")


def sumtune_model(name: str):
    import torch

    from sumtune.methods import AdapterConfig, FullConfig, LoraConfig, PrefixConfig, PromptConfig, apply_method
    from sumtune.model import T5, T5Config
    from sumtune.model.weights import init_weights

    model = T5(T5Config())
    init_weights(model, seed=0)
    config = {
        "sumtune-full": FullConfig(),
        "sumtune-prefix": PrefixConfig(),
        "sumtune-prefix-plain": PrefixConfig(reparametrize=False),
        "sumtune-prompt": PromptConfig(),
        "sumtune-adapter-houlsby": AdapterConfig(placement="houlsby"),
        "sumtune-adapter-parallel": AdapterConfig(placement="parallel"),
        "sumtune-lora": LoraConfig(r=8, alpha=8, targets=("q", "v")),
    }[name]
    with torch.no_grad():
        apply_method(model, config, report=False)

    def step(batch):
        return model(batch["input_ids"], batch["attention_mask"], labels=batch["labels"]).loss

    return model, step


def reference_model(name: str):
    import peft
    import transformers

    from sumtune.model import T5Config

    hf_config = transformers.T5Config(**T5Config().to_hf_dict())
    model = transformers.T5ForConditionalGeneration(hf_config)
    task = peft.TaskType.SEQ_2_SEQ_LM
    if name == "peft-lora":
        model = peft.get_peft_model(model, peft.LoraConfig(task_type=task, r=8, lora_alpha=8, lora_dropout=0.0,
                                                            target_modules=["q", "v"]))
    elif name == "peft-prompt":
        model = peft.get_peft_model(model, peft.PromptTuningConfig(task_type=task, num_virtual_tokens=20))
    elif name == "peft-prefix":
        model = peft.get_peft_model(model, peft.PrefixTuningConfig(task_type=task, num_virtual_tokens=20))

    def step(batch):
        return model(**batch).loss

    return model, step


def memory_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def training_step(name: str, args: argparse.Namespace):
    """Build one configuration and return (step function, trainable parameter count)."""
    import torch

    torch.manual_seed(0)
    build = sumtune_model if name.startswith("sumtune-") else reference_model
    model, loss_of = build(name)
    model.train()
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    batch = make_batch(args)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of(batch)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step, sum(parameter.numel() for parameter in trainable)


def make_batch(args: argparse.Namespace) -> dict:
    import torch

    generator = torch.Generator().manual_seed(1)
    return {
        "input_ids": torch.randint(3, 32000, (args.batch_size, args.source_length), generator=generator),
        "attention_mask": torch.ones(args.batch_size, args.source_length, dtype=torch.long),
        "labels": torch.randint(3, 32000, (args.batch_size, args.target_length), generator=generator),
    }


def timed(step) -> tuple[float, float, float]:
    """Run one step; return (wall seconds, CPU seconds of all threads, loss)."""
    start, cpu_start = time.perf_counter(), time.process_time()
    loss = step()
    return time.perf_counter() - start, time.process_time() - cpu_start, loss


def release_free_memory() -> None:
    """Return freed heap memory to the operating system where the C library is glibc; elsewhere do nothing."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def run_worker(args: argparse.Namespace) -> None:
    """Serve one configuration: build it, then respond to each command read from stdin with a JSON line.

    `step` runs and times one training step; `finish` reports the process's peak memory and exits.
    The process runs only this configuration, so its peak resident set size is its own.
    """
    import torch

    torch.set_num_threads(args.threads)
    step, trainable = training_step(args.worker, args)
    print(json.dumps({"trainable_params": trainable, "rss_before_training_mib": memory_kib("VmRSS") / 1024}),
          flush=True)
    for command in sys.stdin:
        if command.strip() == "step":
            seconds, cpu_seconds, loss = timed(step)
            # glibc keeps freed activations in the heap. Eleven idle workers holding them
            # exhausted 24 GiB, so each worker returns them after its step, outside the timing.
            release_free_memory()
            print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "loss": loss}), flush=True)
        elif command.strip() == "finish":
            print(json.dumps({"peak_rss_mib": memory_kib("VmHWM") / 1024}), flush=True)
            return


class Worker:
    """A subprocess that serves one configuration (see `run_worker`)."""

    def __init__(self, name: str, args: argparse.Namespace, log_dir: Path):
        command = [
            sys.executable, __file__, "--worker", name, "--threads", str(args.threads),
            "--batch-size", str(args.batch_size), "--source-length", str(args.source_length),
            "--target-length", str(args.target_length),
        ]
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
        self.name = name
        self.log = log_dir / f"{name}.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                            text=True, env=env)

    def request(self, command: str | None = None) -> dict:
        """Send `command` (if any) and return the worker's next JSON line; raise RuntimeError if it died."""
        if command is not None:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            lines = self.log.read_text().strip().splitlines()
            raise RuntimeError(lines[-1] if lines else f"exit status {self.process.returncode}")
        return json.loads(line)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def speedup(results: dict[str, dict], slower: str, faster: str, key: str) -> float | None:
    """Return how many times faster `faster` ran than `slower` by `key`, or None if either lacks it."""
    if key not in results.get(slower, {}) or key not in results.get(faster, {}):
        return None
    return results[slower][key] / results[faster][key]


def format_ratio(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.2f}x"


def report(results: dict[str, dict], args: argparse.Namespace) -> list[str]:
    lines = [
        f"batch {args.batch_size}, {args.source_length} source / {args.target_length} target tokens, "
        f"{args.threads} threads, {args.warmup} warmup + {args.steps} timed rounds, one worker process per configuration",
        "",
        "| configuration | library | trainable params | median step, wall (s) | steps, wall (s) "
        "| median step, CPU (s) | peak RSS (MiB) | speedup vs sumtune full, wall / CPU |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for name, (library, description) in CONFIGURATIONS.items():
        result = results.get(name)
        if result is None:
            continue
        if "error" in result:
            lines.append(f"| {name} ({description}) | {library} | failed: {result['error']} | | | | | |")
            continue
        steps = ", ".join(f"{seconds:.1f}" for seconds in result["step_seconds"])
        ratios = " / ".join(format_ratio(speedup(results, "sumtune-full", name, key))
                            for key in ("median_seconds", "median_cpu_seconds"))
        lines.append(
            f"| {name} ({description}) | {library} | {result['trainable_params']:,} | {result['median_seconds']:.2f} "
            f"| {steps} | {result['median_cpu_seconds']:.2f} | {result['peak_rss_mib']:.0f} | {ratios} |"
        )

    lines += ["", "Targets (speedup by wall-clock time, by CPU time in brackets):"]
    checks = [(ours, reference, 1.0) for ours, reference in COUNTERPARTS.items()]
    checks += [(name, "sumtune-full", TARGET_SPEEDUP_OVER_FULL) for name in MUST_BEAT_FULL]
    for ours, reference, target in checks:
        wall = speedup(results, reference, ours, "median_seconds")
        if wall is None:
            continue
        cpu = speedup(results, reference, ours, "median_cpu_seconds")
        verdict = "met" if wall >= target else "MISSED"
        lines.append(f"- {ours} vs {reference}: {format_ratio(wall)} ({format_ratio(cpu)}); "
                     f"target >= {target:.2f}x: {verdict}")
    return lines


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3,
                        help="timed rounds; each round runs one training step of every configuration (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds before timing (default 1)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--source-length", type=int, default=512, help="source tokens per example")
    parser.add_argument("--target-length", type=int, default=128, help="target tokens per example")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: batch 2, 64 source / 16 target tokens, 1 warmup + 1 timed round")
    parser.add_argument("--only", help="comma-separated configuration names; default all: " + ", ".join(CONFIGURATIONS))
    parser.add_argument("--json", type=Path, help="also write the raw results to this JSON file")
    parser.add_argument("--report-from", type=Path,
                        help="print the report for results saved earlier with --json, without running anything")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.batch_size, args.source_length, args.target_length, args.steps, args.warmup = 2, 64, 16, 1, 1
    if args.steps < 1 or args.warmup < 0:
        parser.error(f"--steps must be >= 1 and --warmup >= 0, got {args.steps} and {args.warmup}")
    return args


def main() -> int:
    args = parse_args()
    if args.worker:
        run_worker(args)
        return 0
    if args.report_from:
        print("\n".join(report(json.loads(args.report_from.read_text()), args)))
        return 0
    names = list(CONFIGURATIONS) if not args.only else [name.strip() for name in args.only.split(",")]
    unknown = [name for name in names if name not in CONFIGURATIONS]
    if unknown:
        print(f"unknown configuration(s) {unknown}; expected names from: {', '.join(CONFIGURATIONS)}", file=sys.stderr)
        return 2

    # One worker process per configuration, all alive at once, and one step at a time in round-robin
    # order: a machine whose speed drifts over minutes slows every configuration alike, and each
    # worker's peak memory is its configuration's own.
    results: dict[str, dict] = {}
    workers: dict[str, Worker] = {}
    with tempfile.TemporaryDirectory() as log_dir:
        try:
            for name in names:
                workers[name] = Worker(name, args, Path(log_dir))
            for name in names:
                try:
                    results[name] = {"name": name, **workers[name].request(), "step_seconds": [], "cpu_seconds": []}
                except RuntimeError as error:
                    results[name] = {"name": name, "error": str(error)}
            working = [name for name in names if "error" not in results[name]]
            for number in range(args.warmup + args.steps):
                # Alternate the order, so that no configuration always runs right after the same other one.
                for name in working if number % 2 == 0 else working[::-1]:
                    if "error" in results[name]:
                        continue
                    try:
                        answer = workers[name].request("step")
                    except RuntimeError as error:
                        results[name]["error"] = str(error)
                        continue
                    if number >= args.warmup:
                        results[name]["step_seconds"].append(answer["seconds"])
                        results[name]["cpu_seconds"].append(answer["cpu_seconds"])
                print(f"round {number + 1} of {args.warmup + args.steps} done"
                      f"{' (warmup)' if number < args.warmup else ''}, load average {os.getloadavg()[0]:.1f}",
                      file=sys.stderr, flush=True)
            for name in working:
                if "error" in results[name]:
                    continue
                results[name].update(workers[name].request("finish"))
                results[name]["median_seconds"] = statistics.median(results[name]["step_seconds"])
                results[name]["median_cpu_seconds"] = statistics.median(results[name]["cpu_seconds"])
        finally:
            for worker in workers.values():
                worker.close()
    print("\n".join(report(results, args)))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

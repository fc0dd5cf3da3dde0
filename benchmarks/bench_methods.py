"""Training-step time and peak memory of every sumtune method, beside peft on transformers' T5.

Each configuration runs in a fresh subprocess, so the peak resident set size (VmHWM in
/proc/self/status) belongs to that configuration alone. A step is zero_grad, forward with labels,
backward and an AdamW step, on a T5 of t5-small's shape with random weights (no download), in
training mode (dropout 0.1). All configurations see the same random token ids.

    python benchmarks/bench_methods.py                 # batch 8, 512 source / 128 target tokens, 2 threads
    python benchmarks/bench_methods.py --steps 5 --warmup 2
    python benchmarks/bench_methods.py --quick         # smoke run: batch 2, 64 / 16 tokens, 1 step
    python benchmarks/bench_methods.py --only sumtune-lora,peft-lora

Targets checked at the end: each sumtune method no slower than its peft (or transformers) counterpart,
and prefix, prompt, adapter and LoRA at least 1.3x faster than sumtune's full fine-tuning.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
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


def run_worker(args: argparse.Namespace) -> None:
    """Time one configuration and print a JSON line with its results."""
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    build = sumtune_model if args.worker.startswith("sumtune-") else reference_model
    model, step = build(args.worker)
    model.train()
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)

    generator = torch.Generator().manual_seed(1)
    batch = {
        "input_ids": torch.randint(3, 32000, (args.batch_size, args.source_length), generator=generator),
        "attention_mask": torch.ones(args.batch_size, args.source_length, dtype=torch.long),
        "labels": torch.randint(3, 32000, (args.batch_size, args.target_length), generator=generator),
    }
    rss_before = memory_kib("VmRSS")
    times, cpu_times = [], []
    for index in range(args.warmup + args.steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        optimizer.zero_grad(set_to_none=True)
        loss = step(batch)
        loss.backward()
        optimizer.step()
        if index >= args.warmup:
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
    print(json.dumps({
        "name": args.worker,
        "step_seconds": times,
        "median_seconds": statistics.median(times),
        # CPU seconds of all threads; on a machine shared with other work this rises far less than wall time.
        "median_cpu_seconds": statistics.median(cpu_times),
        "trainable_params": sum(parameter.numel() for parameter in trainable),
        "rss_before_training_mib": rss_before / 1024,
        "peak_rss_mib": memory_kib("VmHWM") / 1024,
        "loss": float(loss),
    }))


def run_configuration(name: str, args: argparse.Namespace) -> dict:
    command = [
        sys.executable, __file__, "--worker", name, "--steps", str(args.steps), "--warmup", str(args.warmup),
        "--threads", str(args.threads), "--batch-size", str(args.batch_size),
        "--source-length", str(args.source_length), "--target-length", str(args.target_length),
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        return {"name": name, "error": result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"}
    return json.loads(result.stdout.strip().splitlines()[-1])


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
        f"{args.threads} threads, {args.warmup} warmup + {args.steps} timed steps, fastest of {args.passes} pass(es)",
        "",
        "| configuration | library | trainable params | median step, wall (s) | steps, wall (s) "
        "| median step, CPU (s) | peak RSS (MiB) | speedup vs sumtune full, wall / CPU | load average |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for name, (library, description) in CONFIGURATIONS.items():
        result = results.get(name)
        if result is None:
            continue
        if "error" in result:
            lines.append(f"| {name} ({description}) | {library} | failed: {result['error']} | | | | | | |")
            continue
        steps = ", ".join(f"{seconds:.1f}" for seconds in result["step_seconds"])
        cpu = result.get("median_cpu_seconds")
        ratios = " / ".join(format_ratio(speedup(results, "sumtune-full", name, key))
                            for key in ("median_seconds", "median_cpu_seconds"))
        lines.append(
            f"| {name} ({description}) | {library} | {result['trainable_params']:,} | {result['median_seconds']:.2f} "
            f"| {steps} | {'n/a' if cpu is None else f'{cpu:.2f}'} | {result['peak_rss_mib']:.0f} | {ratios} "
            f"| {result['load_average']:.1f} |"
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
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per configuration (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before timing (default 1)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per configuration (default 2)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--source-length", type=int, default=512, help="source tokens per example")
    parser.add_argument("--target-length", type=int, default=128, help="target tokens per example")
    parser.add_argument("--passes", type=int, default=1,
                        help="run all configurations this many times in turn and keep each one's fastest pass")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: batch 2, 64 source / 16 target tokens, 1 warmup + 1 timed step")
    parser.add_argument("--only", help="comma-separated configuration names; default all: " + ", ".join(CONFIGURATIONS))
    parser.add_argument("--json", type=Path, help="also write the raw results to this JSON file")
    parser.add_argument("--report-from", type=Path,
                        help="print the report for results saved earlier with --json, without running anything")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.batch_size, args.source_length, args.target_length, args.steps, args.warmup = 2, 64, 16, 1, 1
    if args.steps < 1 or args.warmup < 0 or args.passes < 1:
        parser.error(f"--steps and --passes must be >= 1 and --warmup >= 0, got {args.steps}, {args.passes} "
                     f"and {args.warmup}")
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
    # Each pass runs every configuration in turn, so load from other processes on a shared machine
    # falls on all of them alike. Each configuration keeps its fastest pass.
    results: dict[str, dict] = {}
    for number in range(1, args.passes + 1):
        for name in names:
            started = time.perf_counter()
            result = run_configuration(name, args)
            result["load_average"] = os.getloadavg()[0]
            status = result.get("error") or f"median {result['median_seconds']:.2f} s/step"
            print(f"pass {number}, {name}: {status} ({time.perf_counter() - started:.0f} s, "
                  f"load average {result['load_average']:.1f})", file=sys.stderr, flush=True)
            results.setdefault(name, {"passes": []})["passes"].append(result)
    for name, entry in results.items():
        timed = [result for result in entry["passes"] if "median_seconds" in result]
        best = min(timed, key=lambda result: result["median_seconds"]) if timed else entry["passes"][-1]
        entry.update({key: value for key, value in best.items() if key != "passes"})
    print("\n".join(report(results, args)))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""sumtune's T5 against transformers' T5ForConditionalGeneration: training step, peak memory, beam search.

Both libraries load the same random weights of t5-small's shape (no download) from one directory
that this script writes with `save_t5`, and see the same random token ids.

- train: seconds of a full fine-tuning step (zero_grad, forward with labels, backward, AdamW step)
  in training mode, dropout 0.1.
- generate: seconds of 4-beam search for the whole batch, up to 64 new tokens. min_new_tokens
  equals max_new_tokens so that EOS cannot end a random model's beams early and every run decodes
  the same number of steps. The script checks that both libraries return identical tokens.

Times come from one "paired" subprocess per task that loads both models and alternates them
(sumtune then transformers, then the reverse order, and so on), so that other load on the machine
slows both alike. Peak memory comes from one fresh subprocess per library and task, so that the
peak resident set size (VmHWM in /proc/self/status) belongs to that configuration alone. Those
subprocesses run one warmup step and one timed step (training) or one generation.

    python benchmarks/bench_core.py                  # batch 8, 512 source / 128 target tokens, 2 threads
    python benchmarks/bench_core.py --steps 5 --repeats 3
    python benchmarks/bench_core.py --quick          # smoke run: tiny shapes, seconds
    python benchmarks/bench_core.py --only generate --no-repeat-ngram-size 3

Targets checked at the end: training no slower than transformers, generation at least 1.5 times faster.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = ("sumtune", "transformers")
TARGETS = {"train": 1.0, "generate": 1.5}  # minimum of transformers time / sumtune time

# Hugging Face field names; t5-small's published config.
T5_SMALL = dict(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_decoder_layers=6,
                num_heads=8, feed_forward_proj="relu", tie_word_embeddings=True, dropout_rate=0.1)
QUICK = dict(vocab_size=512, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2,
             num_heads=4, feed_forward_proj="relu", tie_word_embeddings=True, dropout_rate=0.1)

WORKERS = ("sumtune-train", "transformers-train", "sumtune-generate", "transformers-generate",
           "paired-train", "paired-generate")


def peak_rss_mib() -> float:
    """Return this process's peak resident set size in MiB (VmHWM), or NaN where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def make_batch(args, vocab_size: int):
    import torch

    generator = torch.Generator().manual_seed(1234)
    input_ids = torch.randint(3, vocab_size, (args.batch_size, args.source_length), generator=generator)
    input_ids[:, -1] = 1  # sources end with EOS, as the tokenizer writes them
    attention_mask = torch.ones_like(input_ids)
    labels = torch.randint(3, vocab_size, (args.batch_size, args.target_length), generator=generator)
    labels[:, -1] = 1
    return input_ids, attention_mask, labels


def load_model(library: str, args):
    if library == "sumtune":
        from sumtune.model import load_t5

        return load_t5(args.model_dir)
    import transformers

    options = {} if args.hf_attention == "default" else {"attn_implementation": args.hf_attention}
    return transformers.T5ForConditionalGeneration.from_pretrained(args.model_dir, **options)


class Trainer:
    """One library's model, optimizer and batch; `step()` runs and times one training step."""

    def __init__(self, library: str, args):
        import torch

        self.library = library
        self.model = load_model(library, args).train()
        self.input_ids, self.attention_mask, self.labels = make_batch(args, self.model.config.vocab_size)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)

    def step(self) -> float:
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        if self.library == "sumtune":
            loss = self.model(self.input_ids, self.attention_mask, labels=self.labels).loss
        else:
            loss = self.model(input_ids=self.input_ids, attention_mask=self.attention_mask, labels=self.labels).loss
        loss.backward()
        self.optimizer.step()
        return time.perf_counter() - start


class Generator:
    """One library's model and batch; `run()` times one beam search and keeps its tokens."""

    def __init__(self, library: str, args):
        self.library = library
        self.model = load_model(library, args).eval()
        self.input_ids, self.attention_mask, _ = make_batch(args, self.model.config.vocab_size)
        self.settings = dict(
            num_beams=args.num_beams, max_new_tokens=args.max_new_tokens, min_new_tokens=args.max_new_tokens,
            length_penalty=1.0, early_stopping=False, no_repeat_ngram_size=args.no_repeat_ngram_size,
        )
        self.tokens: list[list[int]] = []

    def run(self) -> float:
        import torch

        start = time.perf_counter()
        if self.library == "sumtune":
            from sumtune.model import GenerationConfig, generate

            self.tokens = generate(self.model, self.input_ids, self.attention_mask, GenerationConfig(**self.settings))
        else:
            import transformers

            config = transformers.GenerationConfig(do_sample=False, decoder_start_token_id=0, eos_token_id=1,
                                                   pad_token_id=0, **self.settings)
            with torch.no_grad():
                output = self.model.generate(input_ids=self.input_ids, attention_mask=self.attention_mask,
                                             generation_config=config)
            # transformers pads rows that finished early; keep the tokens through the first EOS.
            rows = [row[1:] for row in output.tolist()]
            self.tokens = [row[: row.index(1) + 1] if 1 in row else row for row in rows]
        return time.perf_counter() - start


def run_worker(args) -> dict:
    kind, task = args.worker.split("-")
    libraries = LIBRARIES if kind == "paired" else (kind,)
    runners = {library: (Trainer if task == "train" else Generator)(library, args) for library in libraries}
    seconds: dict[str, list[float]] = {library: [] for library in libraries}
    if task == "train":
        for runner in runners.values():
            runner.step()  # warmup: the first step allocates the optimizer state
    count = 1
    if kind == "paired":
        count = args.steps if task == "train" else args.repeats
    for index in range(count):
        order = libraries if index % 2 == 0 else tuple(reversed(libraries))
        for library in order:
            runner = runners[library]
            seconds[library].append(runner.step() if task == "train" else runner.run())
    result = {"seconds": seconds, "peak_rss_mib": peak_rss_mib()}
    if "transformers" in runners:
        result["transformers_attention"] = runners["transformers"].model.config._attn_implementation
    if task == "generate":
        result["tokens"] = {library: runner.tokens for library, runner in runners.items()}
    return result


def write_model(args) -> None:
    from sumtune.model import T5, T5Config
    from sumtune.model.weights import init_weights, save_t5

    config = T5Config.from_hf_dict({"model_type": "t5", **(QUICK if args.quick else T5_SMALL)})
    model = T5(config)
    init_weights(model, seed=0)
    save_t5(model, args.model_dir)


def spawn(name: str, args) -> dict:
    command = [sys.executable, __file__, "--worker", name, "--model-dir", args.model_dir]
    for option in ("threads", "batch_size", "source_length", "target_length", "steps", "repeats",
                   "num_beams", "max_new_tokens", "no_repeat_ngram_size", "hf_attention"):
        command += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
    environment = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
                       OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    completed = subprocess.run(command, env=environment, capture_output=True, text=True)
    if completed.returncode != 0:
        sys.stderr.write(completed.stderr)
        raise SystemExit(f"worker {name} failed with exit status {completed.returncode}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch threads per worker (default: 2)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--source-length", type=int, default=512, help="source tokens per example")
    parser.add_argument("--target-length", type=int, default=128, help="target tokens per example (training)")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per library, after one warmup step (default: 3)")
    parser.add_argument("--repeats", type=int, default=2, help="timed generations per library (default: 2)")
    parser.add_argument("--num-beams", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--no-repeat-ngram-size", type=int, default=0,
                        help="ban repeated n-grams of this size in generation (default: 0, off); the random "
                        "model tends to repeat one token, and 3 forces varied tokens")
    parser.add_argument("--hf-attention", choices=("default", "sdpa", "eager"), default="default",
                        help="attention implementation of transformers' T5 (default: its own default, sdpa in 5.25)")
    parser.add_argument("--only", choices=("train", "generate"), help="run one of the two benchmarks")
    parser.add_argument("--quick", action="store_true", help="smoke run with tiny shapes")
    parser.add_argument("--json-output", metavar="FILE", help="also write all results to this JSON file")
    parser.add_argument("--worker", choices=WORKERS, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_size, args.source_length, args.target_length = 2, 64, 16
        args.steps, args.repeats, args.max_new_tokens = 2, 2, 8
    return args


def report(task: str, paired: dict, alone: dict[str, dict], quick: bool) -> bool:
    """Print one task's times, memory and target; return whether its generated tokens agree (always true for train)."""
    medians = {library: statistics.median(paired["seconds"][library]) for library in LIBRARIES}
    for library in LIBRARIES:
        runs = ", ".join(f"{seconds:.2f}" for seconds in paired["seconds"][library])
        print(f"{task:8s} {library:12s} median {medians[library]:7.2f} s (paired runs {runs}; alone "
              f"{alone[library]['seconds'][library][0]:.2f} s)  peak RSS {alone[library]['peak_rss_mib']:6.0f} MiB")
    print(f"{task:8s} transformers attention implementation: {paired.get('transformers_attention')}")
    ratio = medians["transformers"] / medians["sumtune"]
    if quick:
        verdict = "not checked: the targets apply to the t5-small shape"
    else:
        verdict = f"target {TARGETS[task]}x: " + ("met" if ratio >= TARGETS[task] else "MISSED")
    print(f"{task:8s} transformers / sumtune = {ratio:.2f}x ({verdict})")
    if task != "generate":
        return True
    outputs = [paired["tokens"][library] for library in LIBRARIES]
    outputs += [alone[library]["tokens"][library] for library in LIBRARIES]
    identical = all(tokens == outputs[0] for tokens in outputs)
    distinct = len({token for row in outputs[0] for token in row})
    print(f"generate tokens identical in all runs: {identical} ({len(outputs[0])} rows of "
          f"{sorted({len(row) for row in outputs[0]})} tokens, {distinct} distinct token ids)")
    return identical


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(args)))
        return 0

    tasks = [task for task in ("train", "generate") if args.only in (None, task)]
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-core-") as model_dir:
        args.model_dir = model_dir
        write_model(args)
        print(f"shape {'quick' if args.quick else 't5-small'}, batch {args.batch_size}, {args.source_length} source / "
              f"{args.target_length} target tokens, {args.threads} threads, load average {os.getloadavg()[0]:.2f}",
              flush=True)
        for task in tasks:
            for name in (f"sumtune-{task}", f"transformers-{task}", f"paired-{task}"):
                started = time.perf_counter()
                results[name] = spawn(name, args)
                print(f"  {name} done in {time.perf_counter() - started:.0f} s, load average {os.getloadavg()[0]:.2f}",
                      flush=True)

    status = 0
    for task in tasks:
        alone = {library: results[f"{library}-{task}"] for library in LIBRARIES}
        if not report(task, results[f"paired-{task}"], alone, args.quick):
            status = 1
    if args.json_output:
        Path(args.json_output).write_text(json.dumps({"args": vars(args), "results": results}, indent=2) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())

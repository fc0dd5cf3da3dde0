"""Run sumtune's main job end to end: train a method, evaluate it, show ROUGE and a few summaries.

With the Hugging Face Hub reachable this fine-tunes t5-small on CNN/DailyMail samples. Offline it
builds a tiny random T5 and trains it on real articles from a local JSONL file, which proves the
pipeline works but produces meaningless summaries.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import textwrap
from pathlib import Path

from sumtune.cli.main import main as sumtune


def hub_reachable() -> bool:
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        return False
    try:
        from huggingface_hub import HfApi

        HfApi().model_info("google-t5/t5-small", timeout=5)
        return True
    except Exception:  # offline, DNS failure, proxy, rate limit: all mean "use local data"
        return False


def run(argv: list[str]) -> None:
    print("\n$ sumtune " + " ".join(argv), flush=True)
    status = sumtune(argv)
    if status:
        sys.exit(status)


def split_local_data(data: Path, output: Path, test_size: int, seed: int) -> Path:
    """Write train.jsonl and test.jsonl under `output`, so evaluation never sees training articles."""
    rows = [line for line in data.read_text(encoding="utf-8").splitlines() if line.strip()]
    random.Random(seed).shuffle(rows)
    output.mkdir(parents=True, exist_ok=True)
    (output / "test.jsonl").write_text("\n".join(rows[:test_size]) + "\n", encoding="utf-8")
    (output / "train.jsonl").write_text("\n".join(rows[test_size:]) + "\n", encoding="utf-8")
    return output


def show_examples(predictions: Path, count: int) -> None:
    print(f"\nFirst {count} summaries next to their references ({predictions}):")
    with predictions.open(encoding="utf-8") as handle:
        for index, line in zip(range(count), handle):
            record = json.loads(line)
            print(f"\n[{index + 1}] generated: " + textwrap.shorten(record["prediction"], 300))
            print("    reference: " + textwrap.shorten(record["reference"].replace("\n", " "), 300))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--method", default="prefix", help="method to train (default: prefix)")
    parser.add_argument("--output-dir", default="runs/demo", help="run folder (default: runs/demo)")
    parser.add_argument("--data", help="local JSONL file with article/highlights, used when the hub is unreachable")
    args = parser.parse_args()
    output = Path(args.output_dir)

    if hub_reachable():
        print("Hugging Face Hub reachable: fine-tuning t5-small on CNN/DailyMail samples.")
        model, data, extra = "google-t5/t5-small", "cnn_dailymail", ["--max-train-samples", "512", "--max-steps", "200"]
        evaluation = ["--data", "cnn_dailymail", "--split", "test", "--max-samples", "32"]
    else:
        if not args.data or not Path(args.data).is_file():
            sys.exit(
                "The Hugging Face Hub is unreachable and no local data was given. Pass DATA=FILE.jsonl "
                "(JSON lines with 'article' and 'highlights' fields)."
            )
        print(
            "Hugging Face Hub unreachable: using real articles from "
            f"{args.data} and a tiny random T5 built here.\nNOTE: an untrained tiny model produces "
            "meaningless summaries; this run shows the pipeline, not summary quality."
        )
        data_dir = split_local_data(Path(args.data), output.parent / f"{output.name}-data", test_size=20, seed=0)
        model = str(output.parent / f"{output.name}-model")
        run(["init-model", "tiny", "--output", model, "--corpus", str(data_dir / "train.jsonl")])
        data = str(data_dir)
        extra = ["--max-train-samples", "200", "--max-steps", "60", "--max-source-length", "256",
                 "--max-target-length", "64", "--learning-rate", "0.01"]
        evaluation = ["--data", data, "--split", "test"]

    run(["train", "--method", args.method, "--model", model, "--data", data, "--output-dir", str(output),
         "--batch-size", "8", "--max-eval-samples", "16", *extra])
    run(["evaluate", "--run", str(output), *evaluation, "--max-new-tokens", "64"])
    show_examples(output / "eval" / "test" / "predictions.jsonl", count=3)
    print(f"\nThe run is in {output}/: config.yaml, adapter/, metrics.jsonl, metrics.json, and eval/test/ "
          "with the test predictions and their scores.")


if __name__ == "__main__":
    main()

"""`sumtune init-model` and `sumtune summarize` run through the real command-line entry point."""

from __future__ import annotations

import dataclasses
import io
import json
import sys
from pathlib import Path

import pytest
import torch
import transformers

from sumtune.cli.main import main
from sumtune.inference import DEFAULT_GENERATION, Summarizer, read_run_defaults
from sumtune.model import GenerationConfig, generate, load_t5

pytestmark = pytest.mark.usefixtures("single_thread")


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def reference_summaries(model, tokenizer, texts, config: GenerationConfig, prefix="summarize: ", max_length=512) -> list[str]:
    """Summarize one text at a time, without sorting or padding, as an independent reference."""
    summaries = []
    for text in texts:
        encoded = tokenizer(prefix + text, truncation=True, max_length=max_length, return_tensors="pt")
        tokens = generate(model, encoded["input_ids"], encoded["attention_mask"], config)[0]
        summaries.append(tokenizer.decode(tokens, skip_special_tokens=True).strip())
    return summaries


@pytest.fixture(scope="module")
def articles(real_articles) -> list[dict]:
    # Different lengths, so that sorting by length reorders them.
    return [dict(record, source="frank") for record in real_articles[:5]]


@pytest.fixture(scope="module")
def model_dir(tiny_gated_model_dir) -> Path:
    # The gated, untied tiny model writes varied tokens; the random tied one repeats <pad>, which
    # decodes to an empty summary and would leave decoding untested.
    return tiny_gated_model_dir


@pytest.fixture(scope="module")
def tiny_reference(model_dir):
    model = load_t5(str(model_dir)).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    return model, tokenizer


# -- init-model ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory, real_articles) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("corpus") / "corpus.jsonl", real_articles)


@pytest.mark.parametrize(("argv_kind", "gated"), [(["tiny"], False), (["--kind", "tiny-gated"], True), ([], False)])
def test_init_model_writes_loadable_model(tmp_path, capsys, small_corpus, argv_kind, gated):
    output = tmp_path / "model"

    status = main(["init-model", *argv_kind, "--output", str(output), "--corpus", str(small_corpus),
                   "--vocab-size", "300", "--seed", "3"])

    assert status == 0
    captured = capsys.readouterr()
    assert f"to {output}" in captured.out
    assert "model.safetensors" in captured.out
    assert "weights are random" in captured.err
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (output / name).is_file()
    model = load_t5(str(output))
    assert model.config.is_gated == gated
    assert model.config.tie_word_embeddings == (not gated)
    hf_model = transformers.T5ForConditionalGeneration.from_pretrained(output)
    assert hf_model.config.vocab_size == model.config.vocab_size
    tokenizer = transformers.AutoTokenizer.from_pretrained(output)
    assert len(tokenizer) == model.config.vocab_size <= 300
    assert tokenizer("a test sentence")["input_ids"][-1] == tokenizer.eos_token_id == 1


def test_init_model_same_seed_same_weights(tmp_path, small_corpus):
    for name in ("first", "second"):
        assert main(["init-model", "tiny", "--output", str(tmp_path / name), "--corpus", str(small_corpus),
                     "--vocab-size", "300", "--seed", "5"]) == 0

    first = load_t5(str(tmp_path / "first")).state_dict()
    second = load_t5(str(tmp_path / "second")).state_dict()
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_init_model_refuses_existing_model(tmp_path, capsys, small_corpus):
    output = tmp_path / "model"
    argv = ["init-model", "tiny", "--output", str(output), "--corpus", str(small_corpus), "--vocab-size", "300"]
    assert main(argv) == 0
    capsys.readouterr()

    assert main(argv) == 2
    assert "already contains a model" in capsys.readouterr().err
    assert main(argv + ["--overwrite"]) == 0


@pytest.mark.parametrize(("argv_kind", "message"), [
    (["huge"], "unknown model kind 'huge'"),
    (["tiny", "--kind", "tiny-gated"], "differ"),
])
def test_init_model_rejects_bad_kind(tmp_path, capsys, small_corpus, argv_kind, message):
    status = main(["init-model", *argv_kind, "--output", str(tmp_path / "m"), "--corpus", str(small_corpus)])

    assert status == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_init_model_missing_corpus(tmp_path, capsys):
    status = main(["init-model", "tiny", "--output", str(tmp_path / "m"), "--corpus", str(tmp_path / "absent.txt")])

    assert status == 2
    assert "absent.txt not found" in capsys.readouterr().err


# -- summarize -------------------------------------------------------------------------------------

GENERATION_ARGS = ["--max-new-tokens", "8", "--min-new-tokens", "4"]


def with_defaults(**settings) -> GenerationConfig:
    """Return the generation settings `summarize` uses when only `settings` are given on the command line."""
    return dataclasses.replace(DEFAULT_GENERATION, **settings)


def test_summarize_keeps_fields_and_order(tmp_path, capsys, model_dir, tiny_reference, articles):
    input_path = write_jsonl(tmp_path / "in.jsonl", articles)
    output_path = tmp_path / "out" / "summaries.jsonl"

    status = main(["summarize", "--model", str(model_dir), "--input", str(input_path), "--output", str(output_path),
                   "--batch-size", "2", *GENERATION_ARGS])

    assert status == 0
    assert f"wrote {len(articles)} summaries" in capsys.readouterr().out
    records = read_jsonl(output_path)
    assert [record["id"] for record in records] == [record["id"] for record in articles]
    for record, article in zip(records, articles):
        assert record["article"] == article["article"]
        assert record["highlights"] == article["highlights"]
        assert record["source"] == "frank"
    model, tokenizer = tiny_reference
    texts = [article["article"] for article in articles]
    expected = reference_summaries(model, tokenizer, texts, with_defaults(max_new_tokens=8, min_new_tokens=4))
    assert [record["summary"] for record in records] == expected
    assert all(record["summary"] for record in records)


def test_summarize_beam_settings_reach_generation(tmp_path, model_dir, tiny_reference, articles):
    input_path = write_jsonl(tmp_path / "in.jsonl", articles[:3])
    output_path = tmp_path / "out.jsonl"

    status = main(["summarize", "--model", str(model_dir), "--input", str(input_path), "--output", str(output_path),
                   "--num-beams", "3", "--max-new-tokens", "10", "--min-new-tokens", "5", "--length-penalty", "0.6",
                   "--no-repeat-ngram-size", "2", "--max-source-length", "40", "--source-prefix", "", "--quiet"])

    assert status == 0
    model, tokenizer = tiny_reference
    config = with_defaults(num_beams=3, max_new_tokens=10, min_new_tokens=5, length_penalty=0.6, no_repeat_ngram_size=2)
    texts = [article["article"] for article in articles[:3]]
    expected = reference_summaries(model, tokenizer, texts, config, prefix="", max_length=40)
    assert [record["summary"] for record in read_jsonl(output_path)] == expected


def test_summarize_stdin_to_stdout(monkeypatch, capsys, model_dir, articles):
    lines = "".join(json.dumps({"doc": record["article"], "id": record["id"]}) + "\n" for record in articles[:3])
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(lines.encode("utf-8")), encoding="utf-8"))

    status = main(["summarize", "--model", str(model_dir), "--input", "-", "--output", "-", "--text-column", "doc",
                   "--batch-size", "1", *GENERATION_ARGS])

    assert status == 0
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert [record["id"] for record in records] == [record["id"] for record in articles[:3]]
    assert all(isinstance(record["summary"], str) for record in records)
    assert "summarizing" in captured.err  # the progress bar, shown for more than one batch


def test_summarize_source_prefix_reaches_model(tmp_path, monkeypatch, model_dir, tiny_reference, articles):
    import sumtune.inference

    model, tokenizer = tiny_reference
    seen_inputs = []

    def recording_generate(model, input_ids, attention_mask, config):
        seen_inputs.extend(tokenizer.batch_decode(input_ids, skip_special_tokens=True))
        return generate(model, input_ids, attention_mask, config)

    monkeypatch.setattr(sumtune.inference, "generate", recording_generate)
    input_path = write_jsonl(tmp_path / "in.jsonl", articles[:2])
    texts = [record["article"] for record in articles[:2]]
    config = with_defaults(num_beams=1, max_new_tokens=6, min_new_tokens=6)
    settings = ["--num-beams", "1", "--max-new-tokens", "6", "--min-new-tokens", "6", "--max-source-length", "16", "--quiet"]
    inputs_by_prefix = {}
    for prefix, option in (("summarize: ", []), ("", ["--source-prefix", ""]), ("headline: ", ["--source-prefix", "headline: "])):
        seen_inputs.clear()
        output_path = tmp_path / f"out-{len(prefix)}.jsonl"

        assert main(["summarize", "--model", str(model_dir), "--input", str(input_path), "--output", str(output_path),
                     *option, *settings]) == 0

        expected_inputs = [tokenizer.decode(tokenizer(prefix + text, truncation=True, max_length=16)["input_ids"],
                                            skip_special_tokens=True) for text in texts]
        assert sorted(seen_inputs) == sorted(expected_inputs)
        inputs_by_prefix[prefix] = tuple(sorted(seen_inputs))
        expected = reference_summaries(model, tokenizer, texts, config, prefix=prefix, max_length=16)
        assert [record["summary"] for record in read_jsonl(output_path)] == expected

    assert len(set(inputs_by_prefix.values())) == 3


def test_summarize_missing_text_field(tmp_path, capsys, model_dir):
    input_path = write_jsonl(tmp_path / "in.jsonl", [{"article": "Some text."}, {"text": "No article field."}])

    status = main(["summarize", "--model", str(model_dir), "--input", str(input_path), "--output", str(tmp_path / "o.jsonl")])

    assert status == 2
    error = capsys.readouterr().err
    assert "line 2" in error
    assert "missing field 'article'" in error
    assert not (tmp_path / "o.jsonl").exists()


def test_summarize_non_string_text(tmp_path, capsys, model_dir):
    input_path = write_jsonl(tmp_path / "in.jsonl", [{"article": ["a", "list"]}])

    assert main(["summarize", "--model", str(model_dir), "--input", str(input_path), "--output", "-"]) == 2
    assert "line 1: field 'article' is list, expected a string" in capsys.readouterr().err


def test_summarize_invalid_generation_settings(tmp_path, capsys, model_dir):
    input_path = write_jsonl(tmp_path / "in.jsonl", [{"article": "Some text."}])

    status = main(["summarize", "--model", str(model_dir), "--input", str(input_path), "--output", "-",
                   "--max-new-tokens", "5", "--min-new-tokens", "9"])

    assert status == 2
    assert "min_new_tokens must be between 0 and max_new_tokens (5), got 9" in capsys.readouterr().err


def test_summarize_model_not_found(tmp_path, capsys):
    input_path = write_jsonl(tmp_path / "in.jsonl", [{"article": "Some text."}])

    status = main(["summarize", "--model", str(tmp_path / "missing"), "--input", str(input_path), "--output", "-"])

    assert status == 2
    assert "not found" in capsys.readouterr().err


def test_summarize_pickle_model_needs_allow_pickle(tmp_path, capsys, model_dir, tiny_reference, articles):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    for path in model_dir.iterdir():
        if path.name != "model.safetensors":
            (pickled / path.name).write_bytes(path.read_bytes())
    hf_model = transformers.T5ForConditionalGeneration.from_pretrained(model_dir)
    torch.save(hf_model.state_dict(), pickled / "pytorch_model.bin")
    input_path = write_jsonl(tmp_path / "in.jsonl", articles[:1])
    argv = ["summarize", "--model", str(pickled), "--input", str(input_path), "--output", str(tmp_path / "out.jsonl"),
            "--num-beams", "1", "--max-new-tokens", "6", "--min-new-tokens", "6", "--quiet"]

    assert main(argv) == 2
    assert "--allow-pickle" in capsys.readouterr().err
    assert main(argv + ["--allow-pickle"]) == 0

    model, tokenizer = tiny_reference
    config = with_defaults(num_beams=1, max_new_tokens=6, min_new_tokens=6)
    expected = reference_summaries(model, tokenizer, [articles[0]["article"]], config)
    assert [record["summary"] for record in read_jsonl(tmp_path / "out.jsonl")] == expected


def test_summarize_requires_one_source(tmp_path, model_dir):
    with pytest.raises(SystemExit):
        main(["summarize", "--model", str(model_dir), "--run", str(tmp_path), "--input", "-", "--output", "-"])


def test_summarizer_sorts_but_returns_input_order(model_dir, tiny_reference, articles):
    summarizer = Summarizer.load(str(model_dir), device="cpu")
    texts = [articles[2]["article"], articles[0]["article"][:300], articles[1]["article"]]
    config = GenerationConfig(max_new_tokens=6, min_new_tokens=6)

    batched = summarizer.summarize(texts, config, batch_size=2, progress=False)

    model, tokenizer = tiny_reference
    assert batched == reference_summaries(model, tokenizer, texts, config)
    assert summarizer.summarize([], config) == []


# -- method checkpoints and runs -------------------------------------------------------------------


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, model_dir):
    """A run directory with a LoRA checkpoint whose update is non-zero, and a config.yaml."""
    methods = pytest.importorskip("sumtune.methods")
    model = load_t5(str(model_dir))
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    config = methods.method_config_class("lora").from_dict({"r": 4, "targets": ["q", "v", "wo"]})
    methods.apply_method(model, config, report=False)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
    run_dir = tmp_path_factory.mktemp("run") / "lora"
    methods.save_method(model, config, run_dir / "adapter", base_model=str(model_dir), tokenizer=tokenizer)
    (run_dir / "config.yaml").write_text(
        "method: lora\nsource_prefix: 'headline: '\nmax_source_length: 48\neval_batch_size: 2\n"
        "num_beams: 2\nmax_new_tokens: 7\nmin_new_tokens: 7\nbeam_early_stopping: false\n",
        encoding="utf-8",
    )
    return run_dir, model.eval(), tokenizer


def test_summarize_run_uses_run_settings(tmp_path, tiny_reference, lora_run, articles):
    run_dir, model, tokenizer = lora_run
    input_path = write_jsonl(tmp_path / "in.jsonl", articles[:3])
    output_path = tmp_path / "out.jsonl"

    assert main(["summarize", "--run", str(run_dir), "--input", str(input_path), "--output", str(output_path), "--quiet"]) == 0

    texts = [record["article"] for record in articles[:3]]
    config = with_defaults(num_beams=2, max_new_tokens=7, min_new_tokens=7, early_stopping=False)
    expected = reference_summaries(model, tokenizer, texts, config, prefix="headline: ", max_length=48)
    base_model, _ = tiny_reference
    base = reference_summaries(base_model, tokenizer, texts, config, prefix="headline: ", max_length=48)
    actual = [record["summary"] for record in read_jsonl(output_path)]
    assert actual == expected
    assert actual != base  # the LoRA weights were applied


def test_summarize_adapter_with_explicit_settings(tmp_path, lora_run, articles):
    run_dir, model, tokenizer = lora_run
    input_path = write_jsonl(tmp_path / "in.jsonl", articles[:2])
    output_path = tmp_path / "out.jsonl"

    assert main(["summarize", "--adapter", str(run_dir / "adapter"), "--input", str(input_path), "--output", str(output_path),
                 "--num-beams", "1", "--max-new-tokens", "5", "--min-new-tokens", "5", "--quiet"]) == 0

    # An adapter directory has no config.yaml, so the prefix and source length are the defaults.
    config = with_defaults(num_beams=1, max_new_tokens=5, min_new_tokens=5)
    expected = reference_summaries(model, tokenizer, [record["article"] for record in articles[:2]], config)
    assert [record["summary"] for record in read_jsonl(output_path)] == expected


def test_summarize_run_without_adapter(tmp_path, capsys):
    input_path = write_jsonl(tmp_path / "in.jsonl", [{"article": "Some text."}])
    (tmp_path / "run").mkdir()

    assert main(["summarize", "--run", str(tmp_path / "run"), "--input", str(input_path), "--output", "-"]) == 2
    assert "has no adapter/ folder" in capsys.readouterr().err


def test_run_defaults_read_train_config_keys(tmp_path):
    assert read_run_defaults(tmp_path / "absent").generation == {}
    (tmp_path / "config.yaml").write_text(
        "method: lora\nsource_prefix: ''\nmax_source_length: 256\neval_batch_size: 16\nnum_beams: 4\n"
        "length_penalty: 0.8\nbeam_early_stopping: false\nlearning_rate: 0.001\n",
        encoding="utf-8",
    )

    defaults = read_run_defaults(tmp_path)

    assert defaults.source_prefix == ""
    assert defaults.max_source_length == 256
    assert defaults.batch_size == 16
    assert defaults.generation == {"num_beams": 4, "length_penalty": 0.8, "early_stopping": False}


def test_default_generation_matches_train_config():
    train_config = pytest.importorskip("sumtune.train.config")
    defaults = {item.name: item.default for item in dataclasses.fields(train_config.TrainConfig)}

    for name in ("num_beams", "max_new_tokens", "min_new_tokens", "length_penalty", "no_repeat_ngram_size"):
        assert getattr(DEFAULT_GENERATION, name) == defaults[name], name
    assert DEFAULT_GENERATION.early_stopping == defaults["beam_early_stopping"]
    assert Summarizer.__init__.__kwdefaults__["source_prefix"] == defaults["source_prefix"]
    assert Summarizer.__init__.__kwdefaults__["max_source_length"] == defaults["max_source_length"]

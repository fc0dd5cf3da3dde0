"""Tests for TrainConfig: validation of every value at once, YAML layering and the train command line."""

from __future__ import annotations

import re
import textwrap
from dataclasses import fields

import pytest

from sumtune.cli.main import main
from sumtune.errors import ConfigError
from sumtune.train.config import (
    METHOD_NAMES, TrainConfig, cli_fields, flag_name, merge_layers, preset_names, resolve_config,
)


def valid_config(**overrides) -> TrainConfig:
    values = dict(method="lora", model="some-model", data="data.jsonl", output_dir="runs/x")
    values.update(overrides)
    return TrainConfig(**values)


def test_valid_config_has_no_problems():
    assert valid_config().validate() == []


def test_validate_reports_every_problem_at_once():
    config = valid_config(
        learning_rate=-1.0,
        batch_size=0,
        warmup_ratio=1.5,
        label_smoothing=1.0,
        lr_scheduler="exponential",
        max_steps=0,
        method_options={"r": 0},
    )
    problems = config.validate()
    joined = "\n".join(problems)
    assert "learning_rate (--learning-rate)" in joined
    assert "batch_size (--batch-size)" in joined
    assert "warmup_ratio" in joined
    assert "label_smoothing" in joined
    assert "'exponential'" in joined
    assert "max_steps" in joined
    assert "lora.r" in joined
    assert len(problems) == 7


def test_validate_reports_all_wrong_types_together():
    config = valid_config(learning_rate="fast", batch_size=2.5, strict="yes please", seed=None)
    problems = config.validate()
    assert len(problems) == 4
    assert any("learning_rate" in problem and "'fast'" in problem for problem in problems)
    assert any("seed" in problem and "None" in problem for problem in problems)


def test_missing_required_fields_are_named():
    problems = TrainConfig().validate()
    for name in ("method", "model", "data", "output_dir"):
        assert any(problem.startswith(f"{name} ({flag_name(name)}) is required") for problem in problems)


def test_fp16_is_rejected_with_explanation():
    problems = valid_config(precision="fp16").validate()
    assert len(problems) == 1
    assert "float16" in problems[0]
    assert "bf16" in problems[0]


def test_unknown_method_suggests_closest():
    problems = valid_config(method="lorra").validate()
    assert problems == [
        "method (--method) must be one of prefix, prompt, adapter, lora, full, got 'lorra' (did you mean 'lora'?)"
    ]


def test_unknown_method_option_is_reported():
    problems = valid_config(method_options={"rank": 8}).validate()
    assert len(problems) == 1
    assert "'rank'" in problems[0]


def test_conflicting_settings_are_reported():
    problems = valid_config(warmup_steps=10, warmup_ratio=0.1, min_new_tokens=50, max_new_tokens=20,
                            resume=True, overwrite_output_dir=True).validate()
    assert len(problems) == 3


def test_method_names_match_registry():
    from sumtune.methods import METHODS

    assert tuple(METHODS) == METHOD_NAMES


def test_from_dict_converts_yaml_strings():
    # PyYAML reads 3e-4 (no dot) as a string.
    config = TrainConfig.from_dict({"learning_rate": "3e-4", "max_steps": "20", "strict": "true",
                                    "max_eval_samples": "null"})
    assert config.learning_rate == pytest.approx(3e-4)
    assert config.max_steps == 20
    assert config.strict is True
    assert config.max_eval_samples is None


def test_from_dict_rejects_unknown_key_with_suggestion():
    with pytest.raises(ConfigError) as error:
        TrainConfig.from_dict({"learning_rat": 0.1, "batchsize": 4})
    assert len(error.value.problems) == 2
    assert "did you mean 'learning_rate'" in error.value.problems[0]
    assert "did you mean 'batch_size'" in error.value.problems[1]


def test_to_dict_round_trips_through_yaml(tmp_path):
    config = valid_config(method_options={"r": 4, "targets": ("q", "k")}, learning_rate=1e-3, max_steps=7)
    path = tmp_path / "config.yaml"
    path.write_text(config.to_yaml({"base_model": {"name_or_path": "x", "fingerprint": "y"}}), encoding="utf-8")
    loaded = TrainConfig.from_yaml(path)
    assert loaded.to_dict() == config.to_dict()


def test_layers_preset_then_file_then_flags(tmp_path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text(textwrap.dedent("""\
        learning_rate: 1.0e-3
        batch_size: 3
        method_options:
          alpha: 16
    """), encoding="utf-8")
    config = resolve_config(preset="t5-small-lora", config_file=config_file,
                            overrides={"batch_size": "5", "data": "d.jsonl", "output_dir": "o"})
    assert config.method == "lora"  # from the preset
    assert config.warmup_steps == 500  # from the preset
    assert config.learning_rate == pytest.approx(1e-3)  # the file wins over the preset
    assert config.batch_size == 5  # the flag wins over the file
    assert config.method_options["r"] == 4  # preset option kept
    assert config.method_options["alpha"] == 16  # file option merged in


def test_changing_method_drops_earlier_method_options():
    merged = merge_layers([{"method": "lora", "method_options": {"r": 4}}, {"method": "prefix"}])
    assert "method_options" not in merged


def test_unknown_preset_lists_presets():
    with pytest.raises(ConfigError) as error:
        resolve_config(preset="t5-small-lorra")
    assert "did you mean 't5-small-lora'" in str(error.value)
    assert "t5-large-full" in str(error.value)


def test_cli_reports_all_invalid_flags_together(tmp_path, capsys):
    status = main([
        "train", "--method", "lora", "--model", "m", "--data", "d.jsonl", "--output-dir", str(tmp_path / "run"),
        "--learning-rate", "abc", "--batch-size", "-2", "--precision", "fp16", "--lora-r", "0",
    ])
    assert status == 2
    message = capsys.readouterr().err
    assert "4 problem(s)" in message
    for expected in ("'abc'", "batch_size", "float16", "lora.r"):
        assert expected in message
    assert not (tmp_path / "run").exists()


def test_cli_rejects_options_of_another_method(capsys):
    status = main(["train", "--method", "prefix", "--model", "m", "--data", "d.jsonl", "--output-dir", "o",
                   "--lora-r", "4"])
    assert status == 2
    assert "--lora-r belong to --method lora" in capsys.readouterr().err


def test_cli_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for item in cli_fields():
        assert flag_name(item.name) in text
    for flag in ("--lora-r", "--lora-targets", "--prefix-length", "--prompt-length", "--adapter-placement",
                 "--preset", "--config"):
        assert flag in text
    assert "example:" in text
    unwrapped = re.sub(r"-\n\s+", "-", text)  # argparse may wrap a preset name after a hyphen
    for preset in preset_names():
        assert preset in unwrapped


def test_every_field_has_help_text():
    for item in fields(TrainConfig):
        assert item.metadata.get("help"), item.name

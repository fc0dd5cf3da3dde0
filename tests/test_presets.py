"""Every bundled preset loads, validates and documents the command that uses it and its source."""

from __future__ import annotations

import pytest

from sumtune.train.config import METHOD_NAMES, TrainConfig, preset_names, preset_path, read_yaml_mapping

SIZES = ("t5-small", "t5-base", "t5-large")
# The paper behind each method's defaults, as named in the header of its presets.
PAPERS = {
    "prefix": "Li and Liang (2021)",
    "prompt": "Lester et al. (2021)",
    "adapter": "Houlsby et al. (2019)",
    "lora": "Hu et al. (2021)",
    "full": "Raffel et al. (2020)",
}


def test_one_preset_per_size_and_method():
    assert preset_names() == sorted(f"{size}-{method}" for size in SIZES for method in METHOD_NAMES)


@pytest.mark.parametrize("name", preset_names())
def test_preset_loads_and_validates(name):
    config = TrainConfig.from_yaml(preset_path(name))
    # A preset fixes everything except where the data is and where the run goes.
    config.data = "articles.jsonl"
    config.output_dir = "runs/x"
    assert config.validate() == []
    size, method = name.rsplit("-", 1)
    assert config.method == method
    assert config.model == f"google-t5/{size}"
    assert config.source_prefix == "summarize: "
    assert config.method_config() is not None


@pytest.mark.parametrize("name", preset_names())
def test_preset_header_gives_command_and_paper(name):
    text = preset_path(name).read_text(encoding="utf-8")
    first_line = text.splitlines()[0]
    assert first_line == f"# sumtune train --preset {name} --data cnn_dailymail --output-dir runs/{name}"
    method = name.rsplit("-", 1)[1]
    assert PAPERS[method] in text


def test_effective_batch_same_across_sizes():
    for method in METHOD_NAMES:
        products = set()
        for size in SIZES:
            values = read_yaml_mapping(preset_path(f"{size}-{method}"))
            products.add(values["batch_size"] * values["gradient_accumulation_steps"])
        assert len(products) == 1, method

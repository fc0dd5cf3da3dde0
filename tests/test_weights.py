"""Checkpoint loading and saving: transformers round trips, weight names, unsafe and foreign checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from safetensors.torch import load_file

from conftest import VARIANTS, build_hf_model, build_model_pair, hf_t5_config, random_batch
from sumtune.errors import CheckpointError
from sumtune.model import T5, T5Config, load_t5, save_t5
from sumtune.model.weights import hf_to_sumtune_name, init_weights, sumtune_to_hf_name

pytestmark = pytest.mark.usefixtures("single_thread")

TOLERANCE = 1e-5


def logits_of(model, seed: int = 0) -> torch.Tensor:
    input_ids, attention_mask = random_batch(model.config.vocab_size, [9, 5], seed)
    decoder_input_ids = torch.tensor([[0, 5, 9, 13], [0, 7, 7, 2]])
    with torch.no_grad():
        if isinstance(model, T5):
            return model(input_ids, attention_mask, decoder_input_ids=decoder_input_ids).logits
        return model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids).logits


def random_sumtune_model(variant: str, seed: int, **overrides) -> T5:
    config = T5Config.from_hf_dict(hf_t5_config(variant, **overrides).to_dict())
    model = T5(config)
    init_weights(model, seed)
    with torch.no_grad():
        for stack in (model.encoder, model.decoder):
            stack.final_norm.weight.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_transformers_checkpoint_loads_with_equal_logits(tmp_path, variant):
    hf_model = build_hf_model(hf_t5_config(variant), seed=11)
    hf_model.save_pretrained(tmp_path)

    model = load_t5(str(tmp_path)).eval()

    assert model.config.tie_word_embeddings == (variant != "gated-gelu-untied")
    assert (logits_of(model) - logits_of(hf_model)).abs().max().item() < TOLERANCE


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_save_reload_and_transformers_round_trip(tmp_path, variant):
    model = random_sumtune_model(variant, seed=12, num_decoder_layers=3)
    save_t5(model, tmp_path / "first")

    reloaded = load_t5(str(tmp_path / "first")).eval()
    hf_model = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "first").eval()
    hf_model.save_pretrained(tmp_path / "second")
    back = load_t5(str(tmp_path / "second")).eval()

    original = logits_of(model)
    assert torch.equal(logits_of(reloaded), original)
    assert (logits_of(hf_model) - original).abs().max().item() < TOLERANCE
    assert torch.equal(logits_of(back), original)
    for name, tensor in model.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name


def test_distinct_lm_head_loads_untied_in_transformers(tmp_path):
    model = random_sumtune_model("gated-gelu-untied", seed=13)
    assert not torch.equal(model.lm_head.weight, model.shared.weight)
    save_t5(model, tmp_path)

    saved = load_file(tmp_path / "model.safetensors")
    assert torch.equal(saved["lm_head.weight"], model.lm_head.weight)
    hf_model = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path).eval()

    assert hf_model.lm_head.weight.data_ptr() != hf_model.shared.weight.data_ptr()
    assert torch.equal(hf_model.lm_head.weight, model.lm_head.weight)
    assert (logits_of(hf_model) - logits_of(model)).abs().max().item() < TOLERANCE


def test_untied_model_saved_by_transformers_shares_head(tmp_path):
    # transformers 5 keeps an untied T5's head tied to `shared` in memory and writes it as
    # tie_word_embeddings=true + scale_decoder_outputs=false without an lm_head tensor.
    hf_model = build_hf_model(hf_t5_config("gated-gelu-untied"), seed=14)
    hf_model.save_pretrained(tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())

    model = load_t5(str(tmp_path)).eval()

    if written.get("scale_decoder_outputs") is False:
        assert "lm_head.weight" not in load_file(tmp_path / "model.safetensors")
    assert model.lm_head is not None
    assert torch.equal(model.lm_head.weight, model.shared.weight)
    assert (logits_of(model) - logits_of(hf_model)).abs().max().item() < TOLERANCE


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_weight_names_round_trip_for_every_parameter(variant):
    hf_model, model = build_model_pair(variant, seed=0, num_decoder_layers=3)
    hf_names = set(hf_model.state_dict())
    expected_hf_names = hf_names - {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight"}
    if model.lm_head is None:
        expected_hf_names.discard("lm_head.weight")

    mapped = {}
    for name in model.state_dict():
        hf_name = sumtune_to_hf_name(name)
        assert hf_to_sumtune_name(hf_name) == name
        mapped[hf_name] = name

    assert set(mapped) == expected_hf_names
    for hf_name in hf_names:
        ours = hf_to_sumtune_name(hf_name)
        if ours is not None and hf_name in expected_hf_names:
            assert ours in model.state_dict(), hf_name
            assert model.state_dict()[ours].shape == hf_model.state_dict()[hf_name].shape, hf_name


def test_weight_names_of_one_block():
    assert hf_to_sumtune_name("decoder.block.1.layer.1.EncDecAttention.k.weight") == "decoder.blocks.1.cross_attn.inner.k.weight"
    assert hf_to_sumtune_name("decoder.block.0.layer.2.DenseReluDense.wi_0.weight") == "decoder.blocks.0.ffn.inner.wi_0.weight"
    assert hf_to_sumtune_name("encoder.block.1.layer.1.layer_norm.weight") == "encoder.blocks.1.ffn.norm.weight"
    assert hf_to_sumtune_name("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight") == "encoder.relative_bias.weight"
    assert hf_to_sumtune_name("encoder.embed_tokens.weight") is None


def write_pickle_checkpoint(hf_model, directory) -> None:
    directory.mkdir()
    hf_model.config.to_json_file(directory / "config.json")
    torch.save(hf_model.state_dict(), directory / "pytorch_model.bin")


def test_pickle_weights_rejected_without_allow_pickle(tmp_path):
    hf_model = build_hf_model(hf_t5_config("relu-tied"), seed=15)
    write_pickle_checkpoint(hf_model, tmp_path / "pickled")

    with pytest.raises(CheckpointError) as error:
        load_t5(str(tmp_path / "pickled"))
    message = str(error.value)
    assert "pytorch_model.bin" in message
    assert "arbitrary code" in message
    assert "--allow-pickle" in message


def test_pickle_weights_load_with_allow_pickle(tmp_path):
    hf_model = build_hf_model(hf_t5_config("gated-gelu-untied"), seed=16)
    write_pickle_checkpoint(hf_model, tmp_path / "pickled")

    model = load_t5(str(tmp_path / "pickled"), allow_pickle=True).eval()

    assert (logits_of(model) - logits_of(hf_model)).abs().max().item() < TOLERANCE


def test_safetensors_preferred_over_pickle(tmp_path):
    hf_model = build_hf_model(hf_t5_config("relu-tied"), seed=17)
    hf_model.save_pretrained(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not a pickle: must never be opened")

    model = load_t5(str(tmp_path)).eval()

    assert (logits_of(model) - logits_of(hf_model)).abs().max().item() < TOLERANCE


def test_non_t5_model_dir_rejected(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bart", "d_model": 16}))

    with pytest.raises(CheckpointError, match="model_type='bart', not a T5 model"):
        load_t5(str(tmp_path))


def test_directory_without_config_rejected(tmp_path):
    with pytest.raises(CheckpointError, match="has no config.json"):
        load_t5(str(tmp_path))


def test_missing_local_path_rejected(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_t5(str(tmp_path / "no-such-model"))


def test_hub_id_without_network_gives_clear_error(monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)

    with pytest.raises(CheckpointError) as error:
        load_t5("google/flan-t5-small")
    message = str(error.value)
    assert "'google/flan-t5-small'" in message
    assert "network is unreachable" in message
    assert "local directory" in message


def test_weights_not_matching_config_rejected(tmp_path):
    model = random_sumtune_model("relu-tied", seed=18)
    save_t5(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["num_layers"] = 3
    (tmp_path / "config.json").write_text(json.dumps(config))

    with pytest.raises(CheckpointError, match="do not match its config.json"):
        load_t5(str(tmp_path))


@pytest.mark.parametrize("fixture", ["tiny_model_dir", "tiny_gated_model_dir"])
def test_tiny_model_dir_loads_in_transformers(request, fixture):
    tiny_model_dir = request.getfixturevalue(fixture)
    model = load_t5(str(tiny_model_dir)).eval()
    hf_model = transformers.T5ForConditionalGeneration.from_pretrained(tiny_model_dir).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)

    assert tokenizer.pad_token_id == 0
    assert tokenizer.eos_token_id == 1
    assert model.config.vocab_size == len(tokenizer)
    # Logits of these models reach about 30, so the float32 rounding error scales with them.
    torch.testing.assert_close(logits_of(model), logits_of(hf_model), rtol=1e-5, atol=TOLERANCE)

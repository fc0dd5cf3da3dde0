"""Weight names, initialization, loading and saving in the Hugging Face checkpoint layout."""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from sumtune.errors import CheckpointError
from sumtune.model.config import T5Config
from sumtune.model.t5 import T5

logger = logging.getLogger(__name__)

SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")

# (transformers name pattern, sumtune name template). `{stack}` is encoder or decoder, `{i}` the block.
_ATTENTION_SUBLAYERS = {
    ("encoder", "0"): "self_attn",
    ("decoder", "0"): "self_attn",
    ("decoder", "1"): "cross_attn",
}
_FFN_SUBLAYER_INDEX = {"encoder": "1", "decoder": "2"}
_HF_BLOCK = re.compile(r"^(encoder|decoder)\.block\.(\d+)\.layer\.(\d)\.(.+)$")
_OURS_BLOCK = re.compile(r"^(encoder|decoder)\.blocks\.(\d+)\.(self_attn|cross_attn|ffn)\.(.+)$")
_HF_ATTENTION_MODULE = {"self_attn": "SelfAttention", "cross_attn": "EncDecAttention"}


def hf_to_sumtune_name(name: str) -> str | None:
    """Map one transformers T5 parameter name to sumtune's; None for names sumtune does not store."""
    if name in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
        return None  # tied to shared.weight in every T5 checkpoint
    if name.endswith("final_layer_norm.weight"):
        return name.replace("final_layer_norm", "final_norm")
    if name in ("shared.weight", "lm_head.weight"):
        return name
    match = _HF_BLOCK.match(name)
    if match is None:
        return None
    stack, block, sublayer, rest = match.groups()
    if rest.endswith("relative_attention_bias.weight"):
        # Only block 0 of each stack holds the bias in transformers (the decoder's cross-attention
        # never has one); every block shares it, so sumtune stores it on the stack.
        return f"{stack}.relative_bias.weight" if (block, sublayer) == ("0", "0") else None
    if sublayer == _FFN_SUBLAYER_INDEX[stack]:
        ours = "ffn"
        rest = rest.replace("DenseReluDense.", "inner.")
    else:
        ours = _ATTENTION_SUBLAYERS.get((stack, sublayer))
        if ours is None:
            return None
        rest = rest.replace(f"{_HF_ATTENTION_MODULE[ours]}.", "inner.")
    rest = rest.replace("layer_norm.", "norm.")
    return f"{stack}.blocks.{block}.{ours}.{rest}"


def sumtune_to_hf_name(name: str) -> str:
    """Map a sumtune base-model parameter name to transformers' name."""
    if name.endswith("final_norm.weight"):
        return name.replace("final_norm", "final_layer_norm")
    if name.endswith("relative_bias.weight"):
        stack = name.split(".")[0]
        return f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    match = _OURS_BLOCK.match(name)
    if match is None:
        return name
    stack, block, sublayer, rest = match.groups()
    if sublayer == "ffn":
        index = _FFN_SUBLAYER_INDEX[stack]
        rest = rest.replace("inner.", "DenseReluDense.")
    else:
        index = "1" if sublayer == "cross_attn" else "0"
        rest = rest.replace("inner.", f"{_HF_ATTENTION_MODULE[sublayer]}.")
    rest = rest.replace("norm.", "layer_norm.")
    return f"{stack}.block.{block}.layer.{index}.{rest}"


def base_state_dict(model: T5) -> dict[str, Tensor]:
    """Return the base model's weights only, leaving out parameters added by a method."""
    state = model.state_dict()
    expected = set(T5(model.config).to("meta").state_dict())
    return {name: tensor for name, tensor in state.items() if name in expected}


def init_weights(model: T5, seed: int = 0) -> None:
    """Initialize a model from scratch with the scales of the T5 reference implementation.

    Each projection is drawn from a normal distribution whose standard deviation is the inverse
    square root of its fan-in (queries also divide by d_kv, standing in for the unscaled dot
    product), embeddings from N(0, 1), norms at one.
    """
    config = model.config
    generator = torch.Generator().manual_seed(seed)

    def normal(weight: Tensor, std: float) -> None:
        with torch.no_grad():
            weight.copy_(torch.randn(weight.shape, generator=generator) * std)

    normal(model.shared.weight, 1.0)
    if model.lm_head is not None:
        normal(model.lm_head.weight, 1.0)
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(module, nn.Linear):
            fan_in = {
                "q": config.d_model * config.d_kv,
                "k": config.d_model,
                "v": config.d_model,
                "o": config.inner_dim,
                "wi": config.d_model,
                "wi_0": config.d_model,
                "wi_1": config.d_model,
                "wo": config.d_ff,
                "lm_head": config.d_model,
            }[leaf]
            if leaf != "lm_head":
                normal(module.weight, fan_in**-0.5)
    for stack in (model.encoder, model.decoder):
        normal(stack.relative_bias.weight, config.d_model**-0.5)
        for module in stack.modules():
            if hasattr(module, "eps"):
                nn.init.ones_(module.weight)


def resolve_model_dir(name_or_path: str, allow_pickle: bool = False) -> Path:
    """Return a local directory for a checkpoint, downloading it from the Hugging Face Hub if needed."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{name_or_path} is a file; pass the model directory that contains config.json")
    if name_or_path.startswith((".", "/", "~")) or os.sep in name_or_path.strip("/").replace("/", "", 1):
        raise CheckpointError(f"model directory {name_or_path} not found")
    try:
        from huggingface_hub import snapshot_download

        patterns = ["*.json", "*.safetensors", "*.model", "*.txt"]
        if allow_pickle:
            patterns.append("*.bin")
        return Path(snapshot_download(name_or_path, allow_patterns=patterns))
    except Exception as error:  # hub errors come in many classes: offline, 404, auth, proxy
        raise CheckpointError(
            f"could not load model {name_or_path!r}: it is not a local directory and the Hugging Face Hub "
            f"download failed ({type(error).__name__}: {error}). Check the model id, your network, or pass "
            "a local directory (`sumtune init-model tiny` builds a small one offline)."
        ) from error


def read_config(model_dir: Path) -> T5Config:
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{model_dir} has no config.json; it is not a Hugging Face model directory")
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{config_path} is not valid JSON: {error}") from error
    return T5Config.from_hf_dict(data, source=str(config_path))


def read_hf_state_dict(model_dir: Path, allow_pickle: bool = False) -> dict[str, Tensor]:
    """Read transformers-named weights, preferring safetensors; pickle files only when allowed."""
    index_path = model_dir / SAFETENSORS_INDEX
    if (model_dir / SAFETENSORS_FILE).is_file():
        return load_file(model_dir / SAFETENSORS_FILE)
    if index_path.is_file():
        shards = sorted(set(json.loads(index_path.read_text())["weight_map"].values()))
        state: dict[str, Tensor] = {}
        for shard in shards:
            state.update(load_file(model_dir / shard))
        return state
    pickle_path = model_dir / "pytorch_model.bin"
    if pickle_path.is_file():
        if not allow_pickle:
            raise CheckpointError(
                f"{model_dir} has only pytorch_model.bin, a pickle file that can run arbitrary code when "
                "loaded. Convert it to safetensors, or pass --allow-pickle (allow_pickle=True) if you "
                "trust its source."
            )
        return torch.load(pickle_path, map_location="cpu", weights_only=True)
    raise CheckpointError(f"{model_dir} contains no weights ({SAFETENSORS_FILE}, {SAFETENSORS_INDEX} or pytorch_model.bin)")


def load_t5(name_or_path: str, allow_pickle: bool = False, dtype: torch.dtype = torch.float32) -> T5:
    """Load a T5-family checkpoint (hub id or local directory) into sumtune's T5."""
    model_dir = resolve_model_dir(name_or_path, allow_pickle)
    config = read_config(model_dir)
    hf_state = read_hf_state_dict(model_dir, allow_pickle)
    model = T5(config)
    state = {}
    for hf_name, tensor in hf_state.items():
        name = hf_to_sumtune_name(hf_name)
        if name is not None:
            state[name] = tensor
    if "shared.weight" not in state and "encoder.embed_tokens.weight" in hf_state:
        state["shared.weight"] = hf_state["encoder.embed_tokens.weight"]
    if model.lm_head is None:
        state.pop("lm_head.weight", None)
    elif "lm_head.weight" not in state and "shared.weight" in state:
        # An untied model saved by transformers 5 without its own lm_head shares the embedding matrix.
        state["lm_head.weight"] = state["shared.weight"].clone()
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing:
        raise CheckpointError(
            f"{model_dir}: the weights do not match its config.json; missing {len(missing)} tensors "
            f"such as {missing[:3]}"
        )
    if unexpected:
        logger.warning("%s: ignored %d unexpected tensors such as %s", model_dir, len(unexpected), unexpected[:3])
    return model.to(dtype)


def save_t5(model: T5, output_dir: str | Path) -> None:
    """Save the base model as `config.json` + `model.safetensors` with transformers' names.

    The directory loads with `transformers.T5ForConditionalGeneration.from_pretrained` and with
    `load_t5`. Method parameters (prefixes, adapters, LoRA) are not part of it.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    state = {sumtune_to_hf_name(name): tensor.detach().contiguous() for name, tensor in base_state_dict(model).items()}
    # transformers expects the embedding copies too and ties them on load.
    state["encoder.embed_tokens.weight"] = state["shared.weight"]
    state["decoder.embed_tokens.weight"] = state["shared.weight"]
    state = {name: tensor.clone() for name, tensor in state.items()}  # safetensors rejects shared storage
    atomic_write(output_dir / SAFETENSORS_FILE, lambda path: save_file(state, str(path), metadata={"format": "pt"}))
    config_text = json.dumps(model.config.to_hf_dict(), indent=2) + "\n"
    atomic_write(output_dir / "config.json", lambda path: Path(path).write_text(config_text, encoding="utf-8"))


def atomic_write(path: Path, write) -> None:
    """Call `write(temp_path)` on a temporary file beside `path`, then rename it over `path`."""
    path = Path(path)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(temp_name)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise

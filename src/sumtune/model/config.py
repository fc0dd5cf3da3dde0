"""Shape and vocabulary settings of a T5-family model, read from and written to `config.json`."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from sumtune.errors import CheckpointError

# Activation names as used in Hugging Face configs. "gated-gelu" means the tanh approximation
# ("gelu_new"), which T5 v1.1 and FLAN-T5 were trained with.
SUPPORTED_ACTIVATIONS = ("relu", "gelu", "gelu_new", "silu")


@dataclass(frozen=True)
class T5Config:
    """Architecture of a T5 encoder-decoder; the field names follow Hugging Face's `T5Config`."""

    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 2048
    num_layers: int = 6
    num_decoder_layers: int = 6
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "relu"
    tie_word_embeddings: bool = True
    pad_token_id: int = 0
    eos_token_id: int = 1
    decoder_start_token_id: int = 0

    def __post_init__(self) -> None:
        problems = []
        for name in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers", "num_heads"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        if self.activation not in SUPPORTED_ACTIVATIONS:
            problems.append(
                f"feed_forward_proj={self.feed_forward_proj!r} is not supported; expected 'relu', 'gelu', "
                "'gated-gelu', 'gated-silu' or 'gated-relu'"
            )
        if problems:
            raise CheckpointError("invalid T5 config: " + "; ".join(problems))

    @property
    def is_gated(self) -> bool:
        return self.feed_forward_proj.startswith("gated-")

    @property
    def activation(self) -> str:
        name = self.feed_forward_proj.split("-")[-1]
        return "gelu_new" if self.feed_forward_proj == "gated-gelu" else name

    @property
    def inner_dim(self) -> int:
        """Width of the concatenated attention heads, `num_heads * d_kv` (not always `d_model`)."""
        return self.num_heads * self.d_kv

    @classmethod
    def from_hf_dict(cls, data: dict[str, Any], source: str = "config.json") -> T5Config:
        """Build from a Hugging Face `config.json` dictionary, rejecting models that are not T5."""
        model_type = data.get("model_type")
        if model_type not in ("t5", "mt5", "umt5"):
            raise CheckpointError(
                f"{source} describes model_type={model_type!r}, not a T5 model; sumtune supports T5, T5 v1.1, "
                "FLAN-T5 and mT5 checkpoints (model_type 't5' or 'mt5')"
            )
        if model_type == "umt5":
            raise CheckpointError(f"{source}: umT5 (per-layer position bias) is not supported")
        known = {field.name for field in fields(cls)}
        values = {key: value for key, value in data.items() if key in known and value is not None}
        values.setdefault("num_decoder_layers", values.get("num_layers", cls.num_layers))
        if isinstance(values.get("eos_token_id"), list):
            values["eos_token_id"] = values["eos_token_id"][0]
        if data.get("scale_decoder_outputs") is False:
            # transformers 5 writes untied models (T5 v1.1, FLAN-T5) as tie_word_embeddings=true plus
            # scale_decoder_outputs=false; the output layer is then unscaled, as in an untied model.
            values["tie_word_embeddings"] = False
        if "decoder_start_token_id" not in values:
            values["decoder_start_token_id"] = values.get("pad_token_id", 0)
        return cls(**values)

    def to_hf_dict(self) -> dict[str, Any]:
        """Return the `config.json` contents that transformers' `T5ForConditionalGeneration` loads."""
        data = asdict(self)
        data.update(
            model_type="t5",
            architectures=["T5ForConditionalGeneration"],
            is_encoder_decoder=True,
            dense_act_fn=self.activation,
            is_gated_act=self.is_gated,
        )
        return data

    def fingerprint(self) -> str:
        """Return a short hash of the fields that decide weight shapes, to match method weights to a base."""
        shape_fields = (
            "vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers", "num_heads",
            "relative_attention_num_buckets", "feed_forward_proj", "tie_word_embeddings",
        )
        payload = json.dumps({name: getattr(self, name) for name in shape_fields}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

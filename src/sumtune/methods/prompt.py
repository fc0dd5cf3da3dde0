"""Prompt tuning (Lester et al., 2021, "The Power of Scale for Parameter-Efficient Prompt Tuning").

A trained (prompt_length, d_model) matrix is placed before the embedded encoder input, and the
attention mask gets ones for it; `T5.input_prompt` does the placing. Unlike peft's seq2seq prompt
tuning, which allocates twice the virtual tokens and uses half, the prompt here has exactly the
rows that are used, so the trainable count is prompt_length * d_model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from sumtune.methods.base import MethodConfig, MethodSpec, check_choice, check_int, freeze, option, tiled_token_ids
from sumtune.model.t5 import T5

INITS = ("vocab", "text", "random")

# Lester et al. sample the initial prompt from the 5,000 most common tokens. SentencePiece
# vocabularies, T5's included, order pieces by score, so low ids are the common ones.
VOCAB_SAMPLE_SIZE = 5000
# Ids 0, 1 and 2 are T5's <pad>, </s> and <unk>; they are never sampled.
FIRST_ORDINARY_ID = 3
# Lester et al.'s random initialization: uniform in [-0.5, 0.5].
RANDOM_INIT_RANGE = 0.5


@dataclass
class PromptConfig(MethodConfig):
    """Prompt tuning settings; the default is a 20-token prompt sampled from common vocabulary."""

    method = "prompt"

    prompt_length: int = option(20, "number of soft prompt vectors placed before the encoder input")
    init: str = option(
        "vocab",
        "prompt initialization: 'vocab' (embeddings of tokens sampled from the 5,000 most common), 'text' "
        "(embeddings of init_text's tokens, repeated or cut to prompt_length) or 'random' (uniform in [-0.5, 0.5])",
    )
    init_text: str | None = option(None, "text whose token embeddings initialize the prompt when init='text'")

    def validate(self) -> list[str]:
        problems: list[str] = []
        check_int(problems, "prompt", "prompt_length", self.prompt_length, 1)
        check_choice(problems, "prompt", "init", self.init, INITS)
        if self.init == "text":
            if not isinstance(self.init_text, str) or not self.init_text.strip():
                problems.append(f"prompt.init='text' needs a non-empty init_text, got {self.init_text!r}")
        elif self.init_text is not None:
            problems.append(f"prompt.init_text is set but init={self.init!r}; set init='text' to use the text")
        return problems


class SoftPrompt(nn.Module):
    """The `T5.input_prompt` module: returns the prompt repeated over the batch, (batch, P, d_model)."""

    def __init__(self, prompt_length: int, d_model: int):
        super().__init__()
        self.embeddings = nn.Parameter(torch.empty(prompt_length, d_model))

    def forward(self, batch_size: int) -> Tensor:
        return self.embeddings.unsqueeze(0).expand(batch_size, -1, -1)


def initial_token_ids(model: T5, config: PromptConfig, tokenizer) -> list[int] | None:
    """Return the token ids whose embeddings start the prompt, or None for random initialization."""
    if config.init == "text":
        return tiled_token_ids(tokenizer, config.init_text, config.prompt_length, "prompt")
    if config.init == "vocab":
        pool = torch.arange(FIRST_ORDINARY_ID, min(model.config.vocab_size, VOCAB_SAMPLE_SIZE + FIRST_ORDINARY_ID))
        if len(pool) >= config.prompt_length:
            return pool[torch.randperm(len(pool))[: config.prompt_length]].tolist()
        return pool[torch.randint(len(pool), (config.prompt_length,))].tolist()  # tiny vocabularies only
    return None


def apply(model: T5, config: PromptConfig, tokenizer=None) -> None:
    freeze(model)
    token_ids = initial_token_ids(model, config, tokenizer)
    embedding = model.shared.weight
    with torch.device(embedding.device):
        module = SoftPrompt(config.prompt_length, model.config.d_model).to(embedding.dtype)
    with torch.no_grad():
        if token_ids is None:
            module.embeddings.uniform_(-RANDOM_INIT_RANGE, RANDOM_INIT_RANGE)
        else:
            module.embeddings.copy_(embedding[torch.tensor(token_ids, device=embedding.device)])
    model.input_prompt = module


SPEC = MethodSpec(
    name="prompt",
    config_class=PromptConfig,
    apply=apply,
    parameter_pattern=re.compile(r"^input_prompt\."),
    load_config=lambda config: replace(config, init="random", init_text=None),
)

"""Export LoRA and prompt-tuning weights in peft's adapter format, for transformers' T5ForConditionalGeneration.

The base model must be saved separately with `sumtune.model.save_t5`; `peft.PeftModel.from_pretrained`
then loads the export on top of it. Key names follow what peft 0.21 writes for T5 on transformers 5:
`base_model.model.<transformers module>.lora_A.weight` and `.lora_B.weight`, and `prompt_embeddings`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from sumtune.errors import CheckpointError, ConfigError, SumtuneError
from sumtune.methods.base import MethodConfig
from sumtune.methods.lora import LoraConfig, LoraLinear
from sumtune.methods.prompt import PromptConfig
from sumtune.model.t5 import T5
from sumtune.model.weights import atomic_write, sumtune_to_hf_name

PEFT_WEIGHTS_FILE = "adapter_model.safetensors"
PEFT_CONFIG_FILE = "adapter_config.json"


def export_peft(model: T5, config: MethodConfig, output_dir: str | Path, *, base_model: str | None = None) -> Path:
    """Write `output_dir/adapter_config.json` and `adapter_model.safetensors` in peft's format.

    Supports `lora` and `prompt`. Prefix tuning is not exported because peft's T5 prefix reaches
    only decoder self-attention. Adapters have no peft counterpart, and a `full` model is already
    a transformers model (`save_t5`).
    """
    try:
        import peft
    except ImportError as error:
        raise SumtuneError("exporting to peft's format needs the peft package: pip install 'sumtune[peft]'") from error

    if isinstance(config, LoraConfig):
        peft_config, state = lora_export(peft, model, config)
    elif isinstance(config, PromptConfig):
        peft_config, state = prompt_export(peft, model, config)
    else:
        raise ConfigError([
            f"peft export supports the lora and prompt methods, not {config.method!r}: peft's T5 prefix tuning "
            "covers decoder self-attention only, peft has no bottleneck adapters, and a full model is saved "
            "with save_t5"
        ])
    peft_config.base_model_name_or_path = base_model
    peft_config.inference_mode = True

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().contiguous().clone() for name, tensor in state.items()}
    atomic_write(output_dir / PEFT_WEIGHTS_FILE, lambda path: save_file(state, str(path), metadata={"format": "pt"}))
    # save_pretrained writes the JSON with the fields and version stamp that peft expects.
    atomic_write(output_dir / PEFT_CONFIG_FILE, lambda path: write_peft_config(peft_config, Path(path)))
    return output_dir


def write_peft_config(peft_config, path: Path) -> None:
    staging = path.parent / f"{path.name}.dir"
    staging.mkdir()
    try:
        peft_config.save_pretrained(str(staging))
        (staging / PEFT_CONFIG_FILE).replace(path)
    finally:
        for item in staging.iterdir():
            item.unlink()
        staging.rmdir()


def lora_export(peft, model: T5, config: LoraConfig) -> tuple[object, dict[str, Tensor]]:
    state: dict[str, Tensor] = {}
    leaf_names: set[str] = set()
    for name, module in model.named_modules():
        if not isinstance(module, LoraLinear):
            continue
        if module.merged:
            raise CheckpointError(
                f"{name} has its LoRA update merged into the base weight; call unmerge_lora(model) before exporting"
            )
        hf_module = sumtune_to_hf_name(f"{name}.weight").removesuffix(".weight")
        state[f"base_model.model.{hf_module}.lora_A.weight"] = module.lora_A
        state[f"base_model.model.{hf_module}.lora_B.weight"] = module.lora_B
        leaf_names.add(name.rsplit(".", 1)[-1])
    if not state:
        raise CheckpointError("the model has no LoRA layers; apply the lora method before exporting it")
    peft_config = peft.LoraConfig(
        task_type=peft.TaskType.SEQ_2_SEQ_LM,
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=sorted(leaf_names),
        bias="none",
    )
    return peft_config, state


def prompt_export(peft, model: T5, config: PromptConfig) -> tuple[object, dict[str, Tensor]]:
    if model.input_prompt is None:
        raise CheckpointError("the model has no soft prompt; apply the prompt method before exporting it")
    prompt = model.input_prompt.embeddings  # (prompt_length, d_model)
    # peft allocates num_transformer_submodules (2 for seq2seq) x num_virtual_tokens rows but feeds
    # only the first num_virtual_tokens to the encoder (peft 0.21, PeftModelForSeq2SeqLM.forward);
    # the second half is never read, so it is written as zeros.
    embeddings = torch.cat([prompt, torch.zeros_like(prompt)])
    peft_config = peft.PromptTuningConfig(
        task_type=peft.TaskType.SEQ_2_SEQ_LM,
        num_virtual_tokens=config.prompt_length,
        token_dim=model.config.d_model,
        num_transformer_submodules=2,
        num_attention_heads=model.config.num_heads,
        num_layers=model.config.num_layers,
        prompt_tuning_init=peft.PromptTuningInit.RANDOM,
    )
    return peft_config, {"prompt_embeddings": embeddings}

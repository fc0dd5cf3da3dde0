"""Parameter-efficient fine-tuning methods on sumtune's T5: prefix, prompt, adapter, LoRA and full.

Each method is one module with a config dataclass, an `apply` function and a pattern naming its
parameters; `METHODS` maps method names to them. Typical use:

    config = method_config_class("lora").from_dict({"r": 8, "targets": ["q", "v"]})
    apply_method(model, config)          # freezes the base, prints the trainable count
    ...train...
    save_method(model, config, "out/adapter", base_model="t5-small", tokenizer=tokenizer)
    model, tokenizer, config = load_model_with_method("out/adapter")
"""

from sumtune.methods.adapter import AdapterConfig
from sumtune.methods.base import MethodConfig, MethodSpec, count_parameters
from sumtune.methods.full import FullConfig
from sumtune.methods.io import load_method, load_model_with_method, read_method_record, save_method
from sumtune.methods.lora import LoraConfig, LoraLinear, merge_lora, unmerge_lora
from sumtune.methods.peft_export import export_peft
from sumtune.methods.prefix import PrefixConfig
from sumtune.methods.prompt import PromptConfig
from sumtune.methods.registry import METHODS, apply_method, method_config_class, trainable_state_dict

__all__ = [
    "METHODS",
    "AdapterConfig",
    "FullConfig",
    "LoraConfig",
    "LoraLinear",
    "MethodConfig",
    "MethodSpec",
    "PrefixConfig",
    "PromptConfig",
    "apply_method",
    "count_parameters",
    "export_peft",
    "load_method",
    "load_model_with_method",
    "merge_lora",
    "method_config_class",
    "read_method_record",
    "save_method",
    "trainable_state_dict",
    "unmerge_lora",
]

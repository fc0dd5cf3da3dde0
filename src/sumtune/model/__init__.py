"""sumtune's own T5: configuration, modules, weights I/O and generation."""

from sumtune.model.config import T5Config
from sumtune.model.generate import GenerationConfig, generate
from sumtune.model.t5 import T5, PrefixKV
from sumtune.model.weights import load_t5, save_t5

__all__ = ["T5", "T5Config", "GenerationConfig", "PrefixKV", "generate", "load_t5", "save_t5"]

"""sumtune: parameter-efficient fine-tuning of T5 summarizers."""

__version__ = "0.1.0"

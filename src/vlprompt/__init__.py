"""vlprompt: soft-prompt tuning for CLIP-like vision-language models."""

__version__ = "0.1.0"

"""tinygpt: a GPT-2-style character-level language model, trained from scratch on Tiny Shakespeare."""

__version__ = "0.1.0"

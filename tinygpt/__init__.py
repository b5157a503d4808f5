"""tinygpt: a GPT-2-style character-level language model, trained from scratch on Tiny Shakespeare."""

__version__ = "0.1.0"


def pretrained(name: str = "laptop", *, device="cpu"):
    """(model in eval mode, tokenizer) of a model shipped in the package (see tinygpt.zoo).

    Imports torch on first call, not on `import tinygpt` (so `python -m tinygpt --help` stays quick)."""
    from .zoo import pretrained as load

    return load(name, device=device)

"""tinygpt's GPT and generate compute what the workshop's code computes (benchmarks/reference_gpt.py,
written to the workshop write-up's design): the same logits from the same weights, and the same
greedy tokens far past the context window."""

import dataclasses

import pytest
import torch

from benchmarks import reference_gpt
from benchmarks.bench import reference_state_dict
from tinygpt.model import GPT, GPTConfig
from tinygpt.sample import generate

WORKSHOP = GPTConfig(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384)
LAPTOP = GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=96)


def twins(cfg: GPTConfig, seed: int = 0, head_scale: float = 1.0):
    """tinygpt's GPT with random weights, and the reference holding the same weights."""
    torch.manual_seed(seed)
    ours = GPT(cfg).eval()
    with torch.no_grad():
        for p in ours.parameters():  # non-zero biases and LayerNorm shifts too, so a missing one shows
            p.add_(torch.randn_like(p) * 0.02)
        ours.lm_head.weight.mul_(head_scale)
    theirs = reference_gpt.GPT(cfg).eval()
    theirs.load_state_dict(reference_state_dict(ours))
    return ours, theirs


def test_the_reference_has_the_workshop_parameter_count():
    assert sum(p.numel() for p in reference_gpt.GPT(WORKSHOP).parameters()) == 10_795_776


def test_same_weights_give_the_reference_s_logits_at_the_workshop_size():
    ours, theirs = twins(WORKSHOP)
    idx = torch.randint(65, (2, 256), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = theirs(idx)
        got, _ = ours(idx)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_same_weights_give_the_reference_s_loss():
    ours, theirs = twins(LAPTOP)
    idx = torch.randint(65, (3, 64), generator=torch.Generator().manual_seed(2))
    y = torch.randint(65, (3, 64), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx, y)[1], theirs(idx, y)[1], rtol=1e-5, atol=1e-5)


# Past block_size every token is predicted from the last block_size tokens, at positions 0..block_size-1.
# The workshop-size case keeps block_size 256 and 6 heads but narrows the model (one layer, n_embd 96):
# at full width one 256-token window costs ~60 ms per layer on one CPU thread, over a minute per run.
@pytest.mark.slow
@pytest.mark.parametrize(
    "cfg",
    [LAPTOP, dataclasses.replace(WORKSHOP, n_layer=1, n_embd=96)],
    ids=["laptop 4/4/96 block 64", "workshop block 256, 6 heads, 1 layer, n_embd 96"],
)
def test_greedy_generation_equals_the_reference_for_three_block_sizes_of_new_tokens(cfg):
    ours, theirs = twins(cfg, seed=4, head_scale=30)  # peaked distributions: no near-ties between tokens
    prompt = torch.tensor([[7, 21, 33]])
    n = 3 * cfg.block_size
    expected = reference_gpt.generate(theirs, prompt, n, temperature=0)
    got = generate(ours, prompt, n, temperature=0)
    assert got.shape == (1, 3 + n)
    assert torch.equal(got, expected)


def test_seeded_sampling_draws_the_reference_s_tokens_past_the_window():
    """Same distribution, same generator: the same tokens (the reference samples at temperature 1 from
    softmax(logits); tinygpt from the same probabilities, shifted for numerical safety)."""
    ours, theirs = twins(LAPTOP, seed=5, head_scale=3)
    prompt = torch.tensor([[1]])
    expected = reference_gpt.generate(theirs, prompt, 150, temperature=1.0, generator=torch.Generator().manual_seed(6))
    got = generate(ours, prompt, 150, temperature=1.0, generator=torch.Generator().manual_seed(6))
    assert torch.equal(got, expected)

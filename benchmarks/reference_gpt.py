"""The workshop's GPT as its write-up prints it: the fp32 reference the benchmark compares against.

From "Training an LLM from Scratch, Locally", the workshop by Angelos Perivolaropoulos at AI Engineer
World's Fair Europe (talk of 4 May 2026, https://www.youtube.com/watch?v=UsB70Tf5zcE), which builds
on Karpathy's nanoGPT (https://github.com/karpathy/nanoGPT). Its design, kept here: fp32, one fused
`c_attn` projection with a bias, attention as an explicit masked softmax against a `tril` buffer,
exact GELU, the Block/MLP/GPT classes and names of the write-up, `lm_head` without a bias, AdamW at
its defaults (`make_optimizer`), and a `generate` that feeds the last block_size tokens to the model
for every new token.

The write-up's code does not run as printed (a plain list inside nn.ModuleDict; generate unpacking a
bare tensor; temperature 0 divides by zero): each change that makes it run is marked "FIX:", and
nothing else differs but `torch.no_grad` around generate, which only makes the reference faster.
Not part of the package: the tests and the benchmark load it by file path.
"""

import math

import torch
import torch.nn as nn
from torch.nn import functional as F


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.register_buffer("bias", torch.tril(
            torch.ones(config.block_size, config.block_size)
        ).view(1, 1, config.block_size, config.block_size))

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float('-inf'))
        att = F.softmax(att, dim=-1)
        y = att @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)

    def forward(self, x):
        x = self.c_fc(x)
        x = self.gelu(x)
        x = self.c_proj(x)
        return x


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config  # FIX: kept so that generate can read block_size from the model
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.block_size, config.n_embd)
        # FIX: the write-up puts a plain list inside nn.ModuleDict (dict(h=[...])), which raises
        # TypeError; an nn.ModuleList under the same key `h` registers the blocks.
        self.blocks = nn.ModuleDict(dict(
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        ))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)

    def forward(self, idx, targets=None):
        B, T = idx.size()
        tok_emb = self.tok_emb(idx)
        pos_emb = self.pos_emb(torch.arange(T, device=idx.device))
        x = tok_emb + pos_emb
        for block in self.blocks.h:
            x = block(x)
        x = self.ln_f(x)
        logits = self.lm_head(x)
        if targets is not None:
            loss = F.cross_entropy(
                logits.view(-1, logits.size(-1)),
                targets.view(-1)
            )
            return logits, loss
        return logits


def make_optimizer(model):
    """The write-up's optimizer: AdamW at its defaults but the learning rate."""
    return torch.optim.AdamW(model.parameters(), lr=3e-4)


@torch.no_grad()  # not in the write-up: the same tokens, without building an autograd graph nobody uses
def generate(model, idx, max_new_tokens, temperature=0.7, top_k=None, generator=None):
    """The write-up's generate: every new token from the last block_size tokens.

    FIX: temperature 0 is greedy (argmax) instead of a division by zero. The generator argument
    (default None: the global one, as printed) only makes the sampled tokens reproducible.
    """
    block_size = model.config.block_size
    for _ in range(max_new_tokens):
        idx_cond = idx[:, -block_size:]
        logits = model(idx_cond)  # FIX: the write-up unpacks `logits, _ =`, but forward returns a bare tensor
        if temperature == 0:
            idx_next = logits[:, -1, :].argmax(dim=-1, keepdim=True)
        else:
            logits = logits[:, -1, :] / temperature
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = float('-inf')
            probs = F.softmax(logits, dim=-1)
            idx_next = torch.multinomial(probs, num_samples=1, generator=generator)
        idx = torch.cat((idx, idx_next), dim=1)
    return idx

"""A GPT-2-style decoder-only transformer, as in the workshop.

Token and learned position embeddings, a stack of pre-LayerNorm blocks (causal multi-head
self-attention, then a GELU MLP with 4x expansion, each inside a residual connection), a final
LayerNorm and a linear language-model head. While training, dropout acts on the embeddings and
on the output of each residual branch, not on the attention weights (see CausalSelfAttention).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    vocab_size: int = 65
    block_size: int = 256
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.2
    bias: bool = True  # biases in LayerNorms and in every Linear but the key/query/value one

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}): "
                f"each head gets n_embd / n_head dimensions"
            )
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown GPTConfig fields: {sorted(unknown)}")
        return cls(**d)


class Dropout(nn.Module):
    """nn.Dropout, with a cheaper mask on CPU: PyTorch's CPU kernel draws a 32-bit random number
    per element; this takes 16 bits per element from 64-bit random words, about 3x faster, and
    rounds p to a multiple of 1/65536. Elsewhere it is F.dropout."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        n_words = (x.numel() + 3) // 4
        bits = torch.empty(n_words, dtype=torch.int64).random_(-(2**63), None)  # all 64 bits random
        keep = bits.view(torch.int16)[: x.numel()].view(x.shape) >= round(self.p * 65536) - 32768
        return x * keep.to(x.dtype).mul_(1 / (1 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class KVCache:
    """Keys and values of every layer for the tokens seen so far, preallocated to block_size."""

    def __init__(self, config: GPTConfig, batch_size: int, device=None, dtype=torch.float32):
        hs = config.n_embd // config.n_head
        shape = (batch_size, config.n_head, config.block_size, hs)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.length = 0  # tokens cached so far (the position of the next token)

    def reset(self):
        self.length = 0


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        # query, key and value of all heads in one matrix (the workshop's have no bias)
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = Dropout(config.dropout)

    def forward(self, x, cache: KVCache | None = None, layer: int = 0):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        mask, is_causal = None, True
        if cache is not None:
            start = cache.length
            cache.k[layer][:, :, start : start + T] = k
            cache.v[layer][:, :, start : start + T] = v
            k, v = cache.k[layer][:, :, : start + T], cache.v[layer][:, :, : start + T]
            if start > 0:  # query i sits at position start + i and sees keys 0..start + i
                is_causal = False
                if T > 1:
                    mask = torch.arange(start + T, device=x.device) <= torch.arange(start, start + T, device=x.device)[:, None]
        # No dropout on the attention weights: PyTorch's fused CPU kernel can't apply it, and the
        # explicit-softmax fallback makes a workshop training step about 40% slower.
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))

    @torch.no_grad()
    def attention_weights(self, x):
        """(B, n_head, T, T) causal softmax weights, as computed inside forward (without dropout):
        the fused kernel never materialises them, so this recomputes them for plotting."""
        B, T, C = x.shape
        q, k, _ = self.c_attn(x).split(self.n_embd, dim=2)
        q, k = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k))
        scores = (q @ k.transpose(-2, -1)) * (C // self.n_head) ** -0.5
        future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
        return scores.masked_fill(future, float("-inf")).softmax(dim=-1)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, cache: KVCache | None = None, layer: int = 0):
        x = x + self.attn(self.ln_1(x), cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=config.bias)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx, targets=None, cache: KVCache | None = None):
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(
                f"sequence of {start + T} tokens is longer than block_size {self.config.block_size}"
            )
        pos = torch.arange(start, start + T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i)
        if cache is not None:
            cache.length += T
        logits = self.lm_head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def param_breakdown(self) -> dict[str, int]:
        """Parameters by component, in the order data flows through the model."""
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        out = {"token embedding (wte)": count(self.wte), "position embedding (wpe)": count(self.wpe)}
        for i, block in enumerate(self.blocks):
            out[f"block {i}"] = count(block)
        out["final LayerNorm (ln_f)"] = count(self.ln_f)
        out["language-model head (lm_head)"] = count(self.lm_head)
        return out

    @staticmethod
    def block_breakdown(block: Block) -> dict[str, int]:
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        return {
            "ln_1": count(block.ln_1),
            "attention q,k,v": count(block.attn.c_attn),
            "attention projection": count(block.attn.c_proj),
            "ln_2": count(block.ln_2),
            "MLP expand (c_fc)": count(block.mlp.c_fc),
            "MLP project (c_proj)": count(block.mlp.c_proj),
        }

    def flops_per_token(self) -> int:
        """Training FLOPs per token (forward + backward): 6N for the weights + attention scores."""
        c = self.config
        n = self.num_params() - self.wpe.weight.numel() - self.wte.weight.numel()
        return 6 * n + 6 * c.n_layer * c.n_embd * c.block_size  # 12*L*C*T/2: causal half

    def configure_optimizer(self, lr: float, weight_decay: float, betas=(0.9, 0.99), device_type="cpu"):
        """AdamW with weight decay on the matrices of Linear layers only (not on biases,
        LayerNorm gains or embeddings)."""
        decay, no_decay = [], []
        for module in self.modules():
            for name, p in module.named_parameters(recurse=False):
                (decay if isinstance(module, nn.Linear) and name == "weight" else no_decay).append(p)
        groups = [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        # one fused kernel for all parameters: on CPU 5x faster than foreach
        kwargs = {"fused": True} if device_type in ("cuda", "cpu") else {"foreach": True}
        return torch.optim.AdamW(groups, lr=lr, betas=betas, **kwargs)


def ln_vocab(vocab_size: int) -> float:
    """The loss of a model that spreads its bets evenly: ln(vocab_size)."""
    return math.log(vocab_size)

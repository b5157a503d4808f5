"""A GPT-2-style decoder-only transformer: the workshop's model, with its names.

Token and learned position embeddings (`tok_emb`, `pos_emb`), a stack of pre-LayerNorm `blocks`
(causal multi-head self-attention with one fused query/key/value projection `c_attn`, then a
GELU MLP with 4x expansion, each inside a residual connection), a final LayerNorm `ln_f` and a
linear head `lm_head` without a bias. The architecture and names are those of the workshop
"Training an LLM from Scratch, Locally" (Angelos Perivolaropoulos, AI Engineer World's Fair
Europe 2026), which follows Karpathy's nanoGPT: 10,795,776 parameters at 6 layers, 6 heads,
n_embd 384, block_size 256 and 65 characters.

One forward serves training (with targets) and generation: with a KVCache, the tokens given
continue the cached ones, a whole prompt (prefill) or one new token at a time.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import GPTConfig  # the model's size: a dataclass beside the training configs, in config.py


class KVCache:
    """The keys and values of every layer for the tokens seen so far, preallocated to block_size.

    k[layer] and v[layer] are (batch, n_head, block_size, n_embd // n_head); `length` is the number
    of tokens cached, which is also the position of the next one. Each attention layer stores its
    keys and values through `append`; GPT.forward advances `length`. It is for generation: computed
    from the model's weights as they were (after a change of the weights, start a new cache) and
    written in place (no gradient through earlier steps).
    """

    def __init__(self, config: GPTConfig, batch_size: int, device=None, dtype=torch.float32):
        shape = (batch_size, config.n_head, config.block_size, config.n_embd // config.n_head)
        # a tensor per layer: a write to one layer leaves the others' saved views valid for autograd
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.length = 0

    def reset(self):
        self.length = 0

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store the new tokens' keys and values (B, n_head, T, head size) of `layer` after the cached
        ones; returns the keys and values of every token so far (B, n_head, length + T, head size)."""
        end = self.length + k.size(2)
        self.k[layer][:, :, self.length : end] = k
        self.v[layer][:, :, self.length : end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer: int = 0):
        super().__init__()
        self.n_head = config.n_head
        self.layer = layer  # where this layer's keys and values go in a KVCache
        # query, key and value of all heads in one matrix
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        # No dropout on the attention weights (the workshop has none): PyTorch's fused CPU kernel
        # can't apply it, and the explicit softmax it would need is slower (notebook 06 times both).
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, cache: KVCache | None = None):
        """x (B, T, C) -> (B, T, C). With a cache, the T tokens continue the cached ones: they attend
        to them too, and their keys and values are added to the cache."""
        B, T, C = x.size()
        # (B, T, 3C) -> query, key and value, each (B, n_head, T, head size)
        q, k, v = self.c_attn(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        if cache is not None:
            k, v = cache.append(self.layer, k, v)
        # S keys, the cached tokens' then these T: query i sits at position S - T + i and sees keys up
        # to it. Nothing cached: is_causal's triangle; one new token: every key; a chunk after cached
        # tokens: the triangle shifted by their number.
        S = k.size(2)
        mask = None if T == 1 or S == T else torch.ones(T, S, dtype=torch.bool, device=x.device).tril(S - T)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=T > 1 and S == T)
        y = y.transpose(1, 2).reshape(B, T, C)  # heads side by side again
        return self.resid_dropout(self.c_proj(y))

    @torch.no_grad()
    def attention_weights(self, x):
        """For plots: the causal softmax weights (B, n_head, T, T) of x (B, T, C) that forward's fused
        kernel applies to the values but does not return (no cache, no dropout)."""
        B, T, C = x.size()
        q, k, _ = self.c_attn(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))
        future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
        return F.softmax(att.masked_fill(future, float("-inf")), dim=-1)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()  # exact (erf), as the workshop's
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: GPTConfig, layer: int = 0):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, cache: KVCache | None = None):
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, layer) for layer in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx, targets=None, cache: KVCache | None = None):
        """Logits (B, T, vocab_size) for the tokens idx (B, T), and the mean cross-entropy loss
        against targets (B, T) (None without targets).

        With a KV cache, idx continues the cached tokens (positions cache.length...): a prompt
        (prefill) or one new token. Raises ValueError past block_size tokens in all.
        """
        B, T = idx.size()
        start = 0 if cache is None else cache.length
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens is longer than block_size {self.config.block_size}")
        pos = torch.arange(start, start + T, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))
        for block in self.blocks:
            x = block(x, cache)
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
        out = {"token embedding (tok_emb)": count(self.tok_emb), "position embedding (pos_emb)": count(self.pos_emb)}
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
            "attention q,k,v (c_attn)": count(block.attn.c_attn),
            "attention projection (c_proj)": count(block.attn.c_proj),
            "ln_2": count(block.ln_2),
            "MLP expand (c_fc)": count(block.mlp.c_fc),
            "MLP project (c_proj)": count(block.mlp.c_proj),
        }

    def flops_per_token(self) -> int:
        """Training FLOPs per token (forward + backward): 6N for the weights + attention scores."""
        c = self.config
        n = self.num_params() - self.pos_emb.weight.numel() - self.tok_emb.weight.numel()
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
        # one fused kernel for all parameters: on CPU 5x faster than foreach; fused AdamW also runs on
        # MPS (PyTorch 2.4+), where foreach does not
        kwargs = {"fused": True} if device_type in ("cuda", "cpu", "mps") else {"foreach": True}
        return torch.optim.AdamW(groups, lr=lr, betas=betas, **kwargs)


def ln_vocab(vocab_size: int) -> float:
    """The loss of a model that spreads its bets evenly: ln(vocab_size)."""
    return math.log(vocab_size)

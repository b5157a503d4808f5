"""A GPT-2-style decoder-only transformer: the workshop's model, with its names.

Token and learned position embeddings (`tok_emb`, `pos_emb`), a stack of pre-LayerNorm `blocks`
(causal multi-head self-attention with one fused query/key/value projection `c_attn`, then a
GELU MLP with 4x expansion, each inside a residual connection), a final LayerNorm `ln_f` and a
linear head `lm_head` without a bias. The architecture and names are those of the workshop
"Training an LLM from Scratch, Locally" (Angelos Perivolaropoulos, AI Engineer World's Fair
Europe 2026), which follows Karpathy's nanoGPT: 10,795,776 parameters at 6 layers, 6 heads,
n_embd 384, block_size 256 and 65 characters.

Everything the model computes is defined here once: `GPT.forward` serves training (with
targets), prefilling a KV cache and decoding one token at a time against it; the attention
weights drawn in the notebooks come from the same `CausalSelfAttention.forward`.

Decoding on a CPU runs one token through the model at a time, and then every module call and
every tensor operation costs microseconds whatever the size of its tensors. So the forward
methods call F.linear and F.layer_norm on their modules' own parameters rather than calling the
modules and skip the dropout modules outside training; and one new token on a CPU without
autograd goes through Block.decode, the block's arithmetic written out in far fewer calls.
benchmarks/decode_before_after.py times generation against earlier versions of this code.
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
    # The two options below are the course's, not the workshop's; their defaults are the workshop's
    # model. dropout acts on the embeddings and on the output of each residual branch.
    dropout: float = 0.0
    bias: bool = True  # biases in the LayerNorms and in every Linear but lm_head (False: none at all)

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
    """Keys and values of every layer for the tokens seen so far, preallocated to block_size.

    kv[layer] is (2, batch, n_head, block_size, n_embd // n_head): the keys, then the values, so a
    new token's pair goes in with one copy. `length` is the number of tokens cached, which is also
    the position of the next token. GPT.forward fills it.

    A cache belongs to one model and one set of its weights (its keys and values, and the weight
    copies Block.decode keeps in it, are computed from them): after a change of the weights, start a
    new cache. It is for generation: it is written in place, so gradients cannot flow back through
    more than the latest step.
    """

    def __init__(self, config: GPTConfig, batch_size: int, device=None, dtype=torch.float32):
        shape = (2, batch_size, config.n_head, config.block_size, config.n_embd // config.n_head)
        self.kv = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.length = 0
        self._prepared: dict[nn.Module, tuple] = {}  # each block's weights for Block.decode
        self._on_cpu = self.kv[0].device.type == "cpu"

    def reset(self):
        self.length = 0


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        # query, key and value of all heads in one matrix
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = Dropout(config.dropout)

    def forward(self, x, cache: KVCache | None = None, layer: int = 0, need_weights: bool = False,
                last_only: bool = False):
        """x (B, T, C) -> (B, T, C); with need_weights, also the softmax weights (B, n_head, T, T + cached).

        With a cache, the T new tokens sit at positions cache.length... and attend to the cached
        ones too; this writes their keys and values into layer `layer` of the cache (GPT.forward
        advances cache.length once all layers are done). last_only: the output of the last
        position alone (B, 1, C), from its query against every key.
        """
        B, T, C = x.shape
        hs = C // self.n_head
        if last_only:  # keys and values of every position, but the query of the last one alone
            w, b = self.c_attn.weight, self.c_attn.bias
            q = F.linear(x[:, -1:], w[:C], None if b is None else b[:C]).view(B, 1, self.n_head, hs).transpose(1, 2)
            kv = F.linear(x, w[C:], None if b is None else b[C:])
            new_kv = kv.view(B, T, 2, self.n_head, hs).permute(2, 0, 3, 1, 4)
        else:  # (B, T, 3C) -> q (B, n_head, T, head size) and the keys and values (2, B, n_head, T, head size)
            qkv = _linear(x, self.c_attn).view(B, T, 3, self.n_head, hs).permute(2, 0, 3, 1, 4)
            q, new_kv = qkv.select(0, 0), qkv.narrow(0, 1, 2)
        if cache is None:
            kv = new_kv
        else:  # the new keys and values join the cached ones, in one copy
            kv = cache.kv[layer].narrow(3, 0, cache.length + T)
            kv.narrow(3, cache.length, T).copy_(new_kv)
        k, v = kv.unbind(0)
        T, S = q.size(2), k.size(2)  # queries, keys: query i sits at position S - T + i and sees keys 0..S - T + i
        if need_weights:  # the same attention written out, for plots: the fused kernel keeps no weights
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            future = torch.ones(T, S, dtype=torch.bool, device=x.device).triu(S - T + 1)
            att = F.softmax(att.masked_fill(future, float("-inf")), dim=-1)
            y = att @ v
        elif T == 1:  # one query, the last: it sees every key, nothing to mask
            y = F.scaled_dot_product_attention(q, k, v)
        elif S == T:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # a chunk after cached tokens
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(S - T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        # No dropout on the attention weights (the workshop has none): PyTorch's fused CPU kernel
        # can't apply it, and the explicit softmax it would need is slower (notebook 06 times both).
        y = _linear(y.transpose(1, 2).reshape(B, T, C), self.c_proj)
        if self.training:
            y = self.resid_dropout(y)
        return (y, att) if need_weights else y

    @torch.no_grad()
    def attention_weights(self, x):
        """(B, n_head, T, T) causal softmax weights of x (B, T, C): forward's own, without dropout."""
        return self.forward(x, need_weights=True)[1]


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()  # exact (erf), as the workshop's
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = Dropout(config.dropout)

    def forward(self, x):
        x = self.gelu(_linear(x, self.c_fc))
        x = _linear(x, self.c_proj)
        return self.dropout(x) if self.training else x


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, cache: KVCache | None = None, layer: int = 0, last_only: bool = False):
        """x (B, T, C) -> (B, T, C), or (B, 1, C) for the last position alone with last_only."""
        y = self.attn(_layer_norm(x, self.ln_1), cache, layer, last_only=last_only)
        x = (x[:, -1:] if last_only else x) + y
        return x + self.mlp(_layer_norm(x, self.ln_2))

    def decode(self, x, cache: KVCache, layer: int):
        """forward for one new token per row against the cache: x (B, C) -> (B, C), the token at
        position cache.length. For a CPU without autograd or dropout (GPT.forward calls it then).

        One token is so little arithmetic that a decoding step costs what its calls cost, not its
        numbers: this is forward's arithmetic written out in far fewer calls, with weights the cache
        keeps transposed (_weight_t), so the results agree with forward's to rounding
        (the tests check it); benchmarks/decode_before_after.py measures what it gains. It calls
        no submodule, so forward hooks on the block and its parts do not run for decoded tokens.
        """
        B, C = x.shape
        w = cache._prepared.get(self)
        if w is None:  # first use: this block's weights, looked up once per cache
            a, m = self.attn, self.mlp
            w = cache._prepared[self] = (
                self.ln_1.weight, self.ln_1.bias, self.ln_1.eps, _weight_t(a.c_attn), a.n_head,
                _weight_t(a.c_proj), self.ln_2.weight, self.ln_2.bias, self.ln_2.eps,
                _weight_t(m.c_fc), m.gelu, _weight_t(m.c_proj))
        ln1_w, ln1_b, ln1_eps, attn_qkv, H, attn_proj, ln2_w, ln2_b, ln2_eps, mlp_fc, gelu, mlp_proj = w
        pos = cache.length
        qkv = _addmm(F.layer_norm(x, (C,), ln1_w, ln1_b, ln1_eps), *attn_qkv).view(B, 3, H, 1, C // H).transpose(0, 1)
        kv = cache.kv[layer].narrow(3, 0, pos + 1)  # (2, B, H, pos + 1, head size)
        kv.narrow(3, pos, 1).copy_(qkv.narrow(0, 1, 2))
        k, v = kv.unbind(0)
        y = F.scaled_dot_product_attention(qkv.select(0, 0), k, v)  # one query: nothing to mask
        x = _addmm(y.view(B, C), *attn_proj).add_(x)
        h = gelu(_addmm(F.layer_norm(x, (C,), ln2_w, ln2_b, ln2_eps), *mlp_fc))
        return _addmm(h, *mlp_proj).add_(x)


def _layer_norm(x, ln: nn.LayerNorm):
    """ln(x) without the module call."""
    return F.layer_norm(x, ln.normalized_shape, ln.weight, ln.bias, ln.eps)


def _linear(x, linear: nn.Linear):
    """linear(x) without the module call."""
    return F.linear(x, linear.weight, linear.bias)


def _weight_t(linear: nn.Linear) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The layer's weight as (in, out) and its bias, detached, for decoding one token: x @ w_t + b.

    One row through a weight matrix reads every weight once, so on a CPU it runs at the speed the
    matrix streams from memory, and MKL streams a matrix whose rows are short (384 floats) markedly
    slower than one whose rows are long. nn.Linear stores W as (out, in): for the layers that widen
    (c_attn, c_fc) this is a contiguous (in, out) copy (Block.decode keeps it in the cache); for the
    others, the transposed view of W. `python -m benchmarks.bench --only generation` measures both
    layouts (gemv_gb_per_s).
    """
    w = linear.weight.detach()
    return w.t().contiguous() if w.size(0) > w.size(1) else w.t(), None if linear.bias is None else linear.bias.detach()


def _addmm(rows, w_t, b):
    """rows (B, in) @ w_t (in, out) + b: a Linear layer with its weight transposed (Block.decode)."""
    return rows @ w_t if b is None else torch.addmm(b, rows, w_t)


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.block_size, config.n_embd)
        self.drop = Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx, targets=None, cache: KVCache | None = None, last_only: bool = False):
        """Logits (B, T, vocab_size) for the tokens idx (B, T), and the mean cross-entropy loss
        against targets (B, T) (None without targets).

        With a KV cache, idx continues the cached tokens (positions cache.length...): a prompt
        (prefill) or one new token (decode). last_only (for generation, without targets): the
        logits of the last position alone (B, 1, vocab_size); the last block then computes that
        position only. Raises ValueError past block_size tokens in all.
        """
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if last_only and targets is not None:
            raise ValueError("last_only is for generation: the loss needs the logits of every position")
        if start + T > self.config.block_size:
            raise ValueError(
                f"sequence of {start + T} tokens is longer than block_size {self.config.block_size}"
            )
        x = F.embedding(idx, self.tok_emb.weight) + self.pos_emb.weight[start : start + T]  # positions start...
        if self.training:
            x = self.drop(x)
        if T == 1 and cache is not None and cache._on_cpu and not (self.training or torch.is_grad_enabled()):
            x = x.view(B, -1)
            for layer, block in enumerate(self.blocks):  # one token on a CPU: Block.decode (see there)
                x = block.decode(x, cache, layer)
            x = x.view(B, 1, -1)
        else:
            for layer, block in enumerate(self.blocks):
                x = block(x, cache, layer, last_only=last_only and layer == len(self.blocks) - 1)
        if cache is not None:
            cache.length += T
        logits = _linear(_layer_norm(x, self.ln_f), self.lm_head)
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

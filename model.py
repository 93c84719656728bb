"""
A GPT language model written from scratch, readable top to bottom.

The layout follows GPT-2 (Radford et al. 2019) and keeps its module and parameter names
(wte wpe h ln_1 attn c_attn c_proj ln_2 mlp c_fc ln_f lm_head), so Hugging Face GPT-2 weights load by
name. The one thing a condensation study needs beyond nanoGPT: `model(idx, targets, return_hidden=True)`
hands back the hidden states of every layer from the same forward pass, in the convention of
docs/condensation.md, section 1 (the one transformers uses):

    hidden[0]          token + position embedding (input to block 1)
    hidden[1..L-1]     residual stream after blocks 1..L-1
    hidden[L]          output of block L after the final LayerNorm ln_f

Usage:
    model = GPT(GPTConfig(n_layer=6, n_head=6, n_embd=384))
    logits, loss = model(idx, targets)
    logits, loss, hidden = model(idx, targets, return_hidden=True)
    model = GPT.from_pretrained("gpt2")   # needs `pip install transformers` and internet
"""

import inspect
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F


@dataclass
class GPTConfig:
    block_size: int = 1024  # longest sequence the position embedding covers
    vocab_size: int = 50304  # GPT-2's 50257 padded up to a multiple of 64 for speed
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    mlp_dim: int = 0  # hidden width of each MLP; 0 means 4 * n_embd, as GPT-2. The knob the paper sweeps.
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm, as in GPT-2; False is a little faster
    embed_noise_alpha: float = 0.0  # NEFTune: uniform noise of size alpha / sqrt(T * C) on wte, training only

    def __post_init__(self):
        if self.mlp_dim == 0:  # GPT-2's width
            self.mlp_dim = 4 * self.n_embd
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}.")


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's own has no bias=False before 2.1)."""

    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.dropout = config.dropout

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble the heads side by side
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.mlp_dim, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2's "gelu_new", needed for exact weight import
        self.c_proj = nn.Linear(config.mlp_dim, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying (Press & Wolf 2017), as in GPT-2
        self.apply(self._init_weights)
        # GPT-2 paper: residual projections scaled by 1/sqrt(number of residual layers), 2 per block
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding=True):
        """Parameter count; the position embedding is left out by default, as in the scaling-law papers."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def forward(self, idx, targets=None, return_hidden=False):
        B, T = idx.size()
        if T > self.config.block_size:
            raise ValueError(f"sequence of length {T} is longer than block_size {self.config.block_size}.")
        pos = torch.arange(0, T, dtype=torch.long, device=idx.device)  # (T,)
        tok_emb = self.transformer.wte(idx)  # (B, T, C)
        if self.training and self.config.embed_noise_alpha > 0:
            # NEFTune (Jain et al. 2023): uniform noise in +-alpha / sqrt(T * C), training only
            bound = self.config.embed_noise_alpha / math.sqrt(T * self.config.n_embd)
            tok_emb = tok_emb + torch.empty_like(tok_emb).uniform_(-bound, bound)
        x = self.transformer.drop(tok_emb + self.transformer.wpe(pos))  # (B, T, C)
        hidden = [x]
        for block in self.transformer.h:
            x = block(x)
            hidden.append(x)
        x = self.transformer.ln_f(x)
        hidden[-1] = x  # the last entry is taken after ln_f, as in transformers' output_hidden_states

        logits = self.lm_head(x)  # (B, T, vocab)
        loss = None
        if targets is not None:
            # reshape, not view: targets may be a slice such as tokens[:, 1:]
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        if return_hidden:
            return logits, loss, hidden
        return logits, loss

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        """AdamW; weight decay on matrices (2-D and up) only, never on biases or LayerNorm gains."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        use_fused = device_type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters
        extra = dict(fused=True) if use_fused else dict()
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **extra)

    def flops_per_token(self, T):
        """Training FLOPs per token: 6N for the weights plus 12 L T C for attention (PaLM paper, appendix
        B)."""
        cfg = self.config
        return 6 * self.num_params() + 12 * cfg.n_layer * cfg.n_embd * T

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, vocab_size=None):
        """Extend idx (B, T) by max_new_tokens tokens, sampling each from the model's distribution.
        vocab_size: sample only ids below it (the embedding is padded past the tokenizer's last id)."""
        for _ in range(max_new_tokens):
            idx_cond = idx if idx.size(1) <= self.config.block_size else idx[:, -self.config.block_size:]
            logits, _ = self(idx_cond)
            logits = logits[:, -1, :vocab_size] / max(temperature, 1e-8)  # (B, vocab)
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float("inf")
            probs = F.softmax(logits, dim=-1)
            idx = torch.cat((idx, torch.multinomial(probs, num_samples=1)), dim=1)
        return idx

    @classmethod
    def from_hf(cls, hf_model):
        """Convert an in-memory transformers GPT2LMHeadModel into our GPT, weight for weight."""
        c = hf_model.config
        if getattr(c, "activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(f"only GPT-2's tanh GELU is supported, this model uses {c.activation_function}.")
        if abs(c.layer_norm_epsilon - 1e-5) > 1e-12:
            raise ValueError("only layer_norm_epsilon=1e-5 is supported, this model uses "
                             f"{c.layer_norm_epsilon}.")
        if not getattr(c, "tie_word_embeddings", True):  # ours ties them: copying both would keep only one
            raise ValueError("only GPT-2 models with tied input and output embeddings are supported, "
                             "this one unties them.")
        config = GPTConfig(block_size=c.n_positions, vocab_size=c.vocab_size, n_layer=c.n_layer,
                           n_head=c.n_head, n_embd=c.n_embd, mlp_dim=c.n_inner or 4 * c.n_embd, bias=True)
        model = cls(config)
        ours = model.state_dict()
        theirs = {k: v for k, v in hf_model.state_dict().items()
                  if not k.endswith((".attn.bias", ".attn.masked_bias"))}
        if set(theirs) != set(ours):
            raise ValueError(f"parameter names differ: {sorted(set(theirs) ^ set(ours))[:5]}")
        # transformers stores these four as Conv1D, i.e. the transpose of an nn.Linear weight
        transposed = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
        with torch.no_grad():
            for k, v in theirs.items():
                ours[k].copy_(v.t() if k.endswith(transposed) else v)
        return model

    @classmethod
    def from_pretrained(cls, name):
        """Load released GPT-2 weights by name: gpt2, gpt2-medium, gpt2-large, gpt2-xl (online,
        transformers)."""
        try:
            from transformers import GPT2LMHeadModel
        except ImportError:
            raise SystemExit("error: loading Hugging Face GPT-2 needs transformers: pip install "
                             "transformers") from None
        try:
            hf_model = GPT2LMHeadModel.from_pretrained(name)
        except OSError as e:  # offline without a cached copy, or a name Hugging Face does not know
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise SystemExit(f"error: cannot load {name} from Hugging Face ({reason}); connect to the "
                             "internet once, after which the weights are cached.") from None
        return cls.from_hf(hf_model)


def padded_vocab(vocab_size):
    """The embedding's row count for a tokenizer of vocab_size ids: the next multiple of 64 (faster
    matmuls)."""
    return 64 * math.ceil(vocab_size / 64)

"""The SEDD network: a DiT-style bidirectional transformer conditioned on the total noise sigma.

Module and parameter names match the released checkpoints (louaaron/sedd-small, sedd-medium) key for key, so their
state dicts load strictly. Read top to bottom: embeddings, rotary, block, final layer, the model.
"""
from __future__ import annotations

import math
import os
from contextlib import nullcontext

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import SEDDConfig
from .errors import UserError
from .graph import esigm1, get_graph
from .noise import get_noise

SIGMA_FEATURES = 256  # sinusoidal features of sigma, before the MLP


class TokenEmbedding(nn.Module):
    """A raw [V, D] parameter named `embedding` (the checkpoint key is vocab_embed.embedding)."""

    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.embedding = nn.Parameter(torch.empty(vocab_size, dim))
        nn.init.kaiming_uniform_(self.embedding, a=math.sqrt(5))

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        return self.embedding[indices]


class SigmaEmbedding(nn.Module):
    """sigma -> [cos(sigma f), sin(sigma f)] (256 features, cos first) -> Linear -> SiLU -> Linear."""

    def __init__(self, cond_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(SIGMA_FEATURES, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))

    @staticmethod
    def features(sigma: torch.Tensor) -> torch.Tensor:
        half = SIGMA_FEATURES // 2
        # the table is computed on the CPU and moved, as in the reference (a GPU exp may differ in the last bit)
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half).to(sigma.device)
        args = sigma[:, None].float() * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.features(sigma))


class Rotary(nn.Module):
    """Rotate-half (GPT-NeoX style) rotary tables for q and k; v is left untouched."""

    def __init__(self, head_dim: int):
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim)))
        self._cache: tuple[int, torch.device, torch.Tensor, torch.Tensor] | None = None

    def forward(self, seq_len: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of shape [L, head_dim], recomputed only when L or the device changes."""
        if self._cache is None or self._cache[0] != seq_len or self._cache[1] != device:
            t = torch.arange(seq_len, device=device, dtype=self.inv_freq.dtype)
            freqs = torch.outer(t, self.inv_freq.to(device))
            emb = torch.cat([freqs, freqs], dim=-1)
            self._cache = (seq_len, device, emb.cos(), emb.sin())
        return self._cache[2], self._cache[3]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, L, H, d]; cos/sin: [L, d]. bf16/fp16 x: cos/sin rounded to x's dtype, arithmetic in float32, one
    rounding at the end, as the reference's flash-attn rotary kernel does under autocast."""
    cos, sin = cos[None, :, None, :].to(x.dtype), sin[None, :, None, :].to(x.dtype)
    if x.dtype in (torch.bfloat16, torch.float16):
        return (x.float() * cos.float() + rotate_half(x).float() * sin.float()).to(x.dtype)
    return x * cos + rotate_half(x) * sin


def _autocast_off(device: torch.device):
    return torch.autocast(device_type=device.type, enabled=False) if device.type in ("cuda", "cpu") else nullcontext()


class LayerNorm(nn.Module):
    """Bias-free LayerNorm computed in float32 whatever the autocast state, as in the reference."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _autocast_off(x.device):
            x = F.layer_norm(x.float(), [self.dim])
        return x * self.weight[None, None, :]


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class DDiTBlock(nn.Module):
    def __init__(self, dim: int, n_heads: int, cond_dim: int, mlp_ratio: int = 4, dropout: float = 0.1):
        super().__init__()
        self.n_heads = n_heads
        self.norm1 = LayerNorm(dim)
        self.attn_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn_out = nn.Linear(dim, dim, bias=False)
        self.norm2 = LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(approximate="tanh"), nn.Linear(mlp_ratio * dim, dim))
        self.dropout = dropout
        self.adaLN_modulation = nn.Linear(cond_dim, 6 * dim)
        nn.init.zeros_(self.adaLN_modulation.weight)
        nn.init.zeros_(self.adaLN_modulation.bias)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c)[:, None].chunk(6, dim=2)

        qkv = self.attn_qkv(modulate(self.norm1(x), shift_msa, scale_msa))
        q, k, v = qkv.view(B, L, 3, self.n_heads, D // self.n_heads).unbind(dim=2)
        with _autocast_off(x.device):
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        attn = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        attn = self.attn_out(attn.transpose(1, 2).reshape(B, L, D))
        x = x + gate_msa * F.dropout(attn, self.dropout, self.training)

        mlp = self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x + gate_mlp * F.dropout(mlp, self.dropout, self.training)


class FinalLayer(nn.Module):
    def __init__(self, dim: int, vocab_size: int, cond_dim: int):
        super().__init__()
        self.norm_final = LayerNorm(dim)
        self.linear = nn.Linear(dim, vocab_size)
        self.adaLN_modulation = nn.Linear(cond_dim, 2 * dim)
        for layer in (self.linear, self.adaLN_modulation):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def modulated(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """The input of the output projection: modulate(LN(x)). Fused losses project only the rows they need."""
        shift, scale = self.adaLN_modulation(c)[:, None].chunk(2, dim=2)
        return modulate(self.norm_final(x), shift, scale)


class SEDD(nn.Module):
    """forward(indices [B, L] int64, sigma [B]) -> log-scores [B, L, V].

    On CUDA the blocks run under bf16 autocast (the released models' precision); on CPU everything is float32.
    """

    def __init__(self, config: SEDDConfig | dict):
        super().__init__()
        if not isinstance(config, SEDDConfig):  # the official config as a dict / DictConfig, as the reference passes it
            if not hasattr(config, "keys"):
                raise UserError(f"SEDD expects a SEDDConfig or the official config dict, got {type(config).__name__}")
            config = SEDDConfig.from_dict(config)
        config.validate()
        self.config = config
        m = config.model
        self.vocab_size = config.vocab_size
        self.absorb = config.graph.type == "absorb"
        self.scale_by_sigma = m.scale_by_sigma
        self.bf16_on_cuda = True

        self.vocab_embed = TokenEmbedding(self.vocab_size, m.hidden_size)
        self.sigma_map = SigmaEmbedding(m.cond_dim)
        self.rotary_emb = Rotary(m.hidden_size // m.n_heads)
        self.blocks = nn.ModuleList(DDiTBlock(m.hidden_size, m.n_heads, m.cond_dim, dropout=m.dropout) for _ in range(m.n_blocks))
        self.output_layer = FinalLayer(m.hidden_size, self.vocab_size, m.cond_dim)

    def _check_inputs(self, indices: torch.Tensor, sigma) -> torch.Tensor:
        if not isinstance(indices, torch.Tensor) or indices.dim() != 2:
            raise UserError(f"indices must be a [batch, length] tensor, got {getattr(indices, 'shape', type(indices))}")
        if indices.dtype not in (torch.int64, torch.int32):
            raise UserError(f"indices must be integer token ids, got dtype {indices.dtype}")
        sigma = torch.as_tensor(sigma, device=indices.device).float().reshape(-1)
        if sigma.numel() == 1:
            sigma = sigma.expand(indices.shape[0])
        if sigma.shape[0] != indices.shape[0]:
            raise UserError(f"sigma has {sigma.shape[0]} entries for a batch of {indices.shape[0]}")
        if not torch.compiler.is_compiling():
            if indices.numel() and bool(((indices < 0) | (indices >= self.vocab_size)).any()):
                raise UserError(f"token ids must lie in [0, {self.vocab_size}); got min {indices.min().item()}, max {indices.max().item()}")
            if bool((sigma < 0).any() | sigma.isnan().any()):
                raise UserError(f"sigma must be >= 0, got {sigma.min().item()}")
        return sigma

    def _autocast(self, device: torch.device):
        return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and self.bf16_on_cuda else nullcontext()

    def hidden_states(self, indices: torch.Tensor, sigma) -> torch.Tensor:
        """Everything up to the output projection: returns modulate(LN_final(x)) of shape [B, L, D]."""
        sigma = self._check_inputs(indices, sigma)
        x = self.vocab_embed(indices)
        c = F.silu(self.sigma_map(sigma))
        cos, sin = self.rotary_emb(indices.shape[1], indices.device)
        with self._autocast(indices.device):
            for block in self.blocks:
                x = block(x, cos, sin, c)
            return self.output_layer.modulated(x, c)

    def head(self, h: torch.Tensor, indices: torch.Tensor, sigma) -> torch.Tensor:
        """Output projection, the absorb scale_by_sigma shift, and zero at each position's own token."""
        sigma = torch.as_tensor(sigma, device=indices.device).float().reshape(-1).expand(indices.shape[0])
        with self._autocast(indices.device):
            x = self.output_layer.linear(h)
        if self.scale_by_sigma:
            # raw logits approximate log p(j | context) + log N; shift them to log-ratios at noise level sigma
            x = x - torch.log(esigm1(sigma)).to(x.dtype)[:, None, None] - math.log(x.shape[-1] - 1)
        return torch.scatter(x, -1, indices[..., None], torch.zeros_like(x[..., :1]))

    def forward(self, indices: torch.Tensor, sigma) -> torch.Tensor:
        return self.head(self.hidden_states(indices, sigma), indices, sigma)

    def graph_and_noise(self, graph=None, noise=None):
        """(graph, noise) of this model's config, for whichever of the two the caller did not give."""
        return (graph if graph is not None else get_graph(self.config.graph.type, self.config.tokens),
                noise if noise is not None else get_noise(self.config.noise))

    def num_parameters(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.vocab_embed.embedding.numel() + self.output_layer.linear.weight.numel() + self.output_layer.linear.bias.numel()
        return n

    # -- checkpoints ---------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | os.PathLike, *, device="cpu", revision: str | None = None) -> "SEDD":
        """Load a hub repo id or a directory laid out like louaaron/sedd-small (config.json + model.safetensors or
        pytorch_model.bin), a pysedd run directory (export/, else the newest verified checkpoint's EMA) or a
        reference run directory (see pysedd.hub). Keys, dtypes and values are checked strictly."""
        from .hub import load_pretrained

        return load_pretrained(cls, path_or_hub_id, device=device, revision=revision)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write config.json + model.safetensors (the format from_pretrained reads), each file atomically."""
        from .hub import save_pretrained

        save_pretrained(self, directory)

"""The two models the paper compares, each wrapped as an objective module ``forward(x0) -> per-sequence loss [B]``.

Wrapping the loss in a module lets DDP see one ``forward`` that runs the whole loss (SEDD's fused loss calls the
network's pieces, not its ``forward``), and lets the trainer treat both models the same way.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from pysedd.errors import UserError


class SEDDObjective(nn.Module):
    """Denoising score entropy (sedd-spec.md §7): loss_b = Σ_l σ'(t_b)·ℓ_{b,l}, t ~ U per sequence."""

    def __init__(self, model, graph, noise):
        super().__init__()
        self.model, self.graph, self.noise = model, graph, noise

    def forward(self, x0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        from pysedd.losses import score_entropy_loss

        return score_entropy_loss(self.model, self.graph, self.noise, x0, generator=generator)

    def save_pretrained(self, directory: str | Path) -> None:
        self.model.save_pretrained(directory)


class GPT2Objective(nn.Module):
    """Next-token cross-entropy of transformers' GPT2LMHeadModel, as a per-sequence sum over the L−1 predicted tokens
    (so both objectives are per-sequence sums; divide by L−1 for nats per token)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        logits = self.model(input_ids=x0).logits[:, :-1]
        targets = x0[:, 1:]
        nll = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                                          reduction="none")
        return nll.view_as(targets).sum(dim=1)

    def save_pretrained(self, directory: str | Path) -> None:
        self.model.save_pretrained(directory)


def sedd_config(size: str, seq_len: int, graph: str = "absorb", noise: str = "loglinear", **model_overrides):
    """SEDDConfig preset ``size`` (uniform graph → no scale_by_sigma) with the data's sequence length, the chosen
    noise schedule and optional ModelConfig overrides (dropout, hidden_size, ...)."""
    from pysedd.config import SEDDConfig

    cfg = SEDDConfig.preset(size, graph=graph, length=seq_len, **model_overrides)
    cfg.noise = dataclasses.replace(cfg.noise, type=noise)
    cfg.validate()
    return cfg


def gpt2_config(size: str, seq_len: int, **model_overrides):
    """A GPT2Config with the width, depth, heads and dropout of SEDD's ``size`` preset (small = GPT-2 small
    768×12×12, medium = GPT-2 medium 1024×24×16), ``n_positions`` = seq_len and GPT-2's vocabulary."""
    from transformers import GPT2Config

    from pysedd.tokenizer import EOS_ID, VOCAB_SIZE

    m = sedd_config(size, seq_len, **model_overrides).model
    return GPT2Config(vocab_size=VOCAB_SIZE, n_positions=seq_len, n_embd=m.hidden_size, n_layer=m.n_blocks,
                      n_head=m.n_heads, resid_pdrop=m.dropout, embd_pdrop=m.dropout, attn_pdrop=m.dropout,
                      bos_token_id=EOS_ID, eos_token_id=EOS_ID)


def load_ar_model(path_or_id: str):
    """A pretrained GPT-2 (``gpt2``, ``gpt2-medium``, ``gpt2-large`` on the hub, or a save_pretrained directory)."""
    from transformers import GPT2LMHeadModel

    try:
        return GPT2LMHeadModel.from_pretrained(path_or_id)
    except OSError as exc:
        raise UserError(f"cannot load GPT-2 weights from {path_or_id!r}: {str(exc).splitlines()[0]}") from None


def build_objective(cfg, seq_len: int) -> nn.Module:
    """The objective module for a TrainConfig (fresh weights, or ``cfg.init_from``)."""
    if cfg.model == "gpt2":
        if cfg.init_from:
            model = load_ar_model(cfg.init_from)
            if model.config.n_positions < seq_len:
                raise UserError(f"{cfg.init_from} handles {model.config.n_positions} positions < seq_len {seq_len}")
        else:
            from transformers import GPT2LMHeadModel

            model = GPT2LMHeadModel(gpt2_config(cfg.size, seq_len, **cfg.model_overrides()))
        return GPT2Objective(model)

    from pysedd.graph import get_graph
    from pysedd.model import SEDD
    from pysedd.noise import get_noise

    if cfg.init_from:
        model = SEDD.from_pretrained(cfg.init_from)
        config = model.config
    else:
        config = sedd_config(cfg.size, seq_len, cfg.graph, cfg.noise, **cfg.model_overrides())
        model = SEDD(config)
    if config.model.length < seq_len:
        raise UserError(f"the SEDD model handles {config.model.length} positions < seq_len {seq_len}")
    return SEDDObjective(model, get_graph(config.graph.type, config.tokens), get_noise(config.noise))

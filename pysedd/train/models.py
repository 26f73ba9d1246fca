"""The two models the paper compares, each wrapped as an objective module ``forward(x0) -> per-sequence loss [B]``.

Wrapping the loss in a module lets DDP see one ``forward`` that runs the whole loss (SEDD's fused loss calls the
network's pieces, not its ``forward``), and lets the trainer treat both models the same way.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pysedd.errors import UserError


class SEDDObjective(nn.Module):
    """Denoising score entropy (docs/sedd.md#dse-loss): loss_b = Σ_l σ'(t_b)·ℓ_{b,l}, t ~ U per sequence."""

    def __init__(self, model, graph, noise, fused: bool = True):
        super().__init__()
        self.model, self.graph, self.noise = model, graph, noise
        # the fused loss needs the absorbing graph with scale_by_sigma; elsewhere the plain loss is the only one
        self.fused = fused and graph.absorb and model.scale_by_sigma

    def forward(self, x0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        from pysedd.losses import score_entropy_loss

        return score_entropy_loss(self.model, self.graph, self.noise, x0, generator=generator, fused=self.fused)

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


def sedd_config(size: str, seq_len: int, graph: str = "absorb", noise: str | None = None, **model_overrides):
    """SEDDConfig preset ``size`` with the data's sequence length and optional ModelConfig overrides (dropout,
    hidden_size, ...). The preset's graph recipe applies (uniform: geometric noise, no scale_by_sigma) unless
    ``noise`` names another schedule."""
    from pysedd.config import SEDDConfig

    return SEDDConfig.preset(size, graph=graph, noise=noise, length=seq_len, **model_overrides)


def build_objective(cfg, seq_len: int) -> nn.Module:
    """The objective module for a TrainConfig (fresh weights, or ``cfg.init_from``)."""
    from pysedd.loader import load

    if cfg.model == "gpt2":
        if cfg.init_from:  # any form the loader takes: hub id, model directory, pysedd run directory
            model = load(cfg.init_from, "gpt2", "cpu").model
            positions = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
            if positions < seq_len:
                raise UserError(f"{cfg.init_from} handles {positions} positions < seq_len {seq_len}")
        else:
            from transformers import GPT2LMHeadModel

            from pysedd.ar import matching_gpt2_config

            model = GPT2LMHeadModel(matching_gpt2_config(cfg.size, seq_len, **cfg.model_overrides()))
        return GPT2Objective(model)

    from pysedd.graph import get_graph
    from pysedd.model import SEDD
    from pysedd.noise import get_noise

    if cfg.init_from:
        lm = load(cfg.init_from, "sedd", "cpu")
        model, graph, noise = lm.model, lm.graph, lm.noise
    else:
        config = sedd_config(cfg.size, seq_len, cfg.graph, cfg.noise, **cfg.model_overrides())
        model, graph, noise = SEDD(config), get_graph(config.graph.type, config.tokens), get_noise(config.noise)
    if model.config.model.length < seq_len:
        raise UserError(f"the SEDD model handles {model.config.model.length} positions < seq_len {seq_len}")
    return SEDDObjective(model, graph, noise, cfg.fused_loss)

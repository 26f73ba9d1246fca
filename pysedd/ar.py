"""GPT-2 (any transformers causal LM) on the same footing as SEDD: loading, sampling through `generate` with the KV
cache (ancestral, nucleus, top-k; prompt continuation; exact length), the same cost report as the SEDD samplers, and
per-token NLL for zero-shot and generative perplexity.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from .errors import UserError
from .sampling.result import EOS_ID, SampleOutput, Stopwatch, eos_lengths

# Width, depth and heads matching SEDD's presets (pysedd.config.PRESETS); "large-1.3b" is the GPT-2 of Table 7
# (Deschenaux & Gulcehre 2024: 1.3B GPT-2 vs 1.45B SEDD, 2048 context): 1.31B parameters with the tied embedding.
GPT2_PRESETS = {
    "tiny": dict(n_embd=128, n_layer=2, n_head=4),
    "mini": dict(n_embd=256, n_layer=4, n_head=4),
    "small": dict(n_embd=768, n_layer=12, n_head=12),
    "medium": dict(n_embd=1024, n_layer=24, n_head=16),
    "large-1.3b": dict(n_embd=2048, n_layer=24, n_head=32),  # Table 7: 32 heads, as the 1.45B SEDD
}


def gpt2_config(preset: str, n_positions: int = 1024, vocab_size: int = 50257, **overrides):
    """A transformers GPT2Config of a named size (random-init models are fine for latency)."""
    from transformers import GPT2Config

    if preset not in GPT2_PRESETS:
        raise UserError(f"unknown GPT-2 preset {preset!r}; choose one of {', '.join(GPT2_PRESETS)}")
    return GPT2Config(vocab_size=vocab_size, n_positions=n_positions, bos_token_id=min(EOS_ID, vocab_size - 1),
                      eos_token_id=min(EOS_ID, vocab_size - 1), **{**GPT2_PRESETS[preset], **overrides})


# SEDD presets whose GPT-2 counterpart in GPT2_PRESETS has another name (same width, depth and heads)
GPT2_PRESET_FOR = {"large-1.45b": "large-1.3b"}


def matching_gpt2_config(size: str, seq_len: int, **model_overrides):
    """A GPT2Config with exactly the width, depth, heads and dropout of the SEDD preset ``size`` (with the same
    ModelConfig overrides): small = GPT-2 small 768×12×12, medium = GPT-2 medium 1024×24×16; ``n_positions`` =
    seq_len. `pysedd train --model gpt2` builds its baseline from it, and the loader rebuilds such a run with it."""
    from .config import SEDDConfig

    m = SEDDConfig.preset(size, length=seq_len, **model_overrides).model
    return gpt2_config(GPT2_PRESET_FOR.get(size, size), n_positions=seq_len, n_embd=m.hidden_size,
                       n_layer=m.n_blocks, n_head=m.n_heads, resid_pdrop=m.dropout, embd_pdrop=m.dropout,
                       attn_pdrop=m.dropout)


def load_ar_model(path_or_hub_id: str | os.PathLike, device="cpu"):
    """A pretrained causal LM (gpt2, gpt2-medium, gpt2-large on the hub, or a save_pretrained directory), in eval mode."""
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(str(path_or_hub_id))
    except (OSError, ValueError) as exc:
        hint = "" if os.path.isdir(str(path_or_hub_id)) else \
            " (not a local directory; hub ids need the Hugging Face hub, which is unreachable offline)"
        raise UserError(f"cannot load a causal LM from {str(path_or_hub_id)!r}{hint}: {str(exc).splitlines()[0]}") from None
    return model.to(device).eval()


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _prompt_tensor(prompt_ids, batch_size: int, vocab: int, device) -> torch.Tensor:
    ids = torch.as_tensor(prompt_ids if isinstance(prompt_ids, torch.Tensor) else _rectangular(prompt_ids), dtype=torch.int64)
    if ids.dim() == 1:
        ids = ids[None].expand(batch_size, -1)
    if ids.dim() != 2 or ids.shape[0] != batch_size or ids.shape[1] == 0:
        raise UserError(f"prompt_ids must be [{batch_size}, P] (or one shared [P] prompt), got {tuple(ids.shape)}")
    if bool(((ids < 0) | (ids >= vocab)).any()):
        raise UserError(f"prompt ids must lie in [0, {vocab})")
    return ids.to(device)


def _rectangular(rows):
    rows = [list(r) for r in rows] if rows and isinstance(rows[0], (list, tuple)) else list(rows)
    if rows and isinstance(rows[0], list) and len({len(r) for r in rows}) > 1:
        raise UserError("prompts of different lengths: give equal-length prompts (e.g. the first --prompt-len tokens)")
    return rows


@torch.no_grad()
def ar_sample(model, batch_size: int, length: int, *, prompt_ids=None, top_k: int = 0, top_p: float | None = None,
              greedy: bool = False, temperature: float = 1.0, use_cache: bool = True, stop_at_eos: bool = False,
              eos_id: int | None = None, seed: int | None = 0) -> SampleOutput:
    """Sample `length` new tokens per row with transformers `generate`.

    top_k=0 and top_p=None is pure ancestral sampling (transformers applies top_k=50 unless told otherwise).
    Unconditional rows start from BOS (<|endoftext|>) and return the `length` new tokens; with `prompt_ids` the rows
    are prompt ++ continuation. Exact length by default (exactly `length` new tokens, as min_new_tokens =
    max_new_tokens would force, but without suppressing EOS): EOS is an ordinary token that does not stop
    generation; `stop_at_eos` stops each row at its first EOS and reports `lengths`.
    nfe = the number of network calls (one per new token, the first on the whole prompt)."""
    from transformers import GenerationConfig

    for name, value in (("batch_size", batch_size), ("length", length)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{name} must be a positive integer, got {value!r}")
    if top_k < 0 or (top_p is not None and not 0.0 < top_p <= 1.0):
        raise UserError(f"need top_k >= 0 and top_p in (0, 1], got top_k={top_k}, top_p={top_p}")
    if not temperature > 0:
        raise UserError(f"temperature must be > 0, got {temperature}")
    device, cfg = _device(model), model.config
    eos = eos_id if eos_id is not None else (cfg.eos_token_id if cfg.eos_token_id is not None else EOS_ID)
    bos = cfg.bos_token_id if cfg.bos_token_id is not None else eos
    if prompt_ids is None:
        inputs = torch.full((batch_size, 1), bos, dtype=torch.int64, device=device)
    else:
        inputs = _prompt_tensor(prompt_ids, batch_size, cfg.vocab_size, device)
    max_positions = getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None)
    # A full-context unconditional sample (length = the model's positions, e.g. 1024 tokens from GPT-2) has no room
    # for the start token in front: it takes the first position, and length - 1 tokens are generated after it
    # (as MDLM's AR baseline samples; judges score tokens 2..L anyway).
    full_context = prompt_ids is None and length == max_positions
    n_new = length - 1 if full_context else length
    if max_positions is not None and inputs.shape[1] + n_new > max_positions:
        raise UserError(f"prompt ({inputs.shape[1]}) + length ({length}) exceeds the model's {max_positions} positions")
    gen = GenerationConfig(
        do_sample=not greedy, top_k=top_k, top_p=top_p, temperature=temperature,  # top_k=None would mean top-50
        max_new_tokens=n_new, use_cache=use_cache, pad_token_id=eos, bos_token_id=bos,
        # exact length: no stop token at all. (None would fall back to the model's EOS, and min_new_tokens would
        # then suppress EOS, changing every token's law; with no stop token EOS is sampled like any other token.)
        eos_token_id=eos if stop_at_eos else [],
    )
    calls = [0]
    hook = model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    model.eval()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            if seed is not None:
                torch.manual_seed(seed)
            clock = Stopwatch(device)
            out = model.generate(inputs, attention_mask=torch.ones_like(inputs), generation_config=gen)
            wall = clock.stop()
    finally:
        hook.remove()
    new = out[:, inputs.shape[1]:]
    if new.shape[1] < n_new:  # every row stopped early
        new = F.pad(new, (0, n_new - new.shape[1]), value=eos)
    samples = torch.cat([inputs, new], 1) if prompt_ids is not None or full_context else new
    lengths = None
    if stop_at_eos:
        given = torch.zeros_like(samples, dtype=torch.bool)
        given[:, : samples.shape[1] - n_new] = True  # prompt or start token
        lengths = eos_lengths(samples, eos, given)
    sampler = "greedy" if greedy else ("ancestral" if not top_k and top_p is None else
                                       f"top_k={top_k}" if top_k else f"top_p={top_p}")
    return SampleOutput(samples=samples, nfe=calls[0], tokens=batch_size * length, wall_time=wall, sampler=sampler,
                        lengths=lengths, extra=dict(kv_cache=use_cache, top_k=top_k, top_p=top_p, seed=seed))


@torch.no_grad()
def ar_token_nll(model, ids: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Per-token NLL [B, L-1] (nats, float64 on the CPU) of ids[:, 1:] given the preceding tokens; the first token
    is context only. Log-softmax in float32 whatever the model's dtype."""
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.shape[1] < 2:
        raise UserError(f"ids must be a [batch, length >= 2] tensor, got {getattr(ids, 'shape', type(ids))}")
    vocab = model.config.vocab_size
    if bool(((ids < 0) | (ids >= vocab)).any()):
        raise UserError(f"ids must lie in [0, {vocab})")
    model.eval()
    device = _device(model)
    out = []
    for chunk in ids.long().split(batch_size or ids.shape[0]):
        chunk = chunk.to(device)
        logits = model(chunk).logits[:, :-1].float()
        nll = F.cross_entropy(logits.transpose(1, 2), chunk[:, 1:], reduction="none")
        out.append(nll.double().cpu())
    return torch.cat(out)

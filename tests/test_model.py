"""The DDiT network, its checkpoints and config (docs/sedd.md#network, invariants I2, I3, I5, I13, I14)."""
import json
import math

import pytest
import torch

from pysedd.config import SEDDConfig
from pysedd.errors import UserError
from pysedd.graph import Absorbing, Uniform
from pysedd.losses import score_entropy_loss
from pysedd.model import SEDD, SigmaEmbedding, apply_rotary
from pysedd.noise import Geometric, LogLinear

TINY = dict(hidden_size=32, cond_dim=16, n_blocks=2, n_heads=4, length=8)


def tiny_config(graph="absorb", tokens=16):
    return SEDDConfig.preset("tiny", graph=graph, tokens=tokens, **TINY)


def randomise(model, seed=0):
    """Give the zero-initialised maps random values so every parameter influences the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


# ---------------------------------------------------------------- architecture
def test_output_at_init_is_constant_and_zero_at_own_token():
    """I2: zero-init adaLN and output layer -> every entry equals -log e_sigma - log(V - 1), own token 0."""
    torch.manual_seed(0)
    model = SEDD(tiny_config()).eval()
    x = torch.randint(0, 17, (3, 8))
    sigma = torch.tensor([0.1, 1.0, 5.0])
    out = model(x, sigma)
    assert out.shape == (3, 8, 17)
    assert (out.gather(-1, x[..., None]) == 0).all()
    expected = -torch.log(torch.expm1(sigma)) - math.log(16)
    other = out.scatter(-1, x[..., None], float("nan"))
    for b in range(3):
        vals = other[b][~other[b].isnan()]
        torch.testing.assert_close(vals, torch.full_like(vals, expected[b].item()), rtol=1e-6, atol=1e-6)


def test_sigma_features():
    """I3: at sigma = 0, 128 ones then 128 zeros; the last frequency is 10000^(-127/128)."""
    feat = SigmaEmbedding.features(torch.zeros(1))
    assert torch.equal(feat[0, :128], torch.ones(128)) and torch.equal(feat[0, 128:], torch.zeros(128))
    f = SigmaEmbedding.features(torch.ones(1))
    assert math.asin(f[0, 255].item()) == pytest.approx(10000 ** (-127 / 128), rel=1e-5)  # sin(sigma * freqs[127])


def test_rotary_relative_positions_and_buffer():
    """I13: inv_freq[0] = 1, inv_freq[31] = 10000^(-62/64); <rot(q, m), rot(k, n)> depends on n - m only."""
    model = SEDD(SEDDConfig.preset("small", n_blocks=1))
    inv = model.rotary_emb.inv_freq
    assert inv.shape == (32,) and inv[0] == 1 and inv[31].item() == pytest.approx(10000 ** (-62 / 64), rel=1e-6)
    cos, sin = model.rotary_emb(16, torch.device("cpu"))
    q, k = torch.randn(64, dtype=torch.float64), torch.randn(64, dtype=torch.float64)
    rot = lambda v: apply_rotary(v.expand(1, 16, 1, 64), cos.double(), sin.double())[0, :, 0]  # noqa: E731
    rq, rk = rot(q), rot(k)
    dots = rq @ rk.T  # [m, n]
    for d in (0, 3, 7):
        diag = torch.diagonal(dots, offset=d)
        torch.testing.assert_close(diag, diag[0].expand_as(diag), rtol=1e-5, atol=1e-5)  # float32 tables


def test_attention_is_bidirectional_and_permutation_sensitive():
    torch.manual_seed(0)
    model = randomise(SEDD(tiny_config())).eval()
    x = torch.randint(0, 16, (1, 8))
    y = x.clone()
    y[0, 7] = (y[0, 7] + 1) % 16
    out_x, out_y = model(x, torch.tensor([0.5])), model(y, torch.tensor([0.5]))
    assert not torch.allclose(out_x[0, 0], out_y[0, 0])  # position 0 sees position 7: not causal


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    cfg = tiny_config()
    model = randomise(SEDD(cfg))
    model.train()
    x0 = torch.randint(0, 16, (4, 8))
    loss = score_entropy_loss(model, Absorbing(16), LogLinear(), x0, t=torch.full((4,), 0.9)).mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_uniform_model_trains_too():
    torch.manual_seed(0)
    model = randomise(SEDD(tiny_config("uniform")))
    loss = score_entropy_loss(model, Uniform(16), Geometric(), torch.randint(0, 16, (2, 8))).mean()
    loss.backward()
    assert torch.isfinite(loss) and model.vocab_embed.embedding.grad.abs().sum() > 0


# ---------------------------------------------------------------- loss at init (I5)
def zero_init_loss_case(t):
    """A zero-initialised full-vocabulary model, a perturbed batch at times t, and the exact loss it must give:
    with a zero output layer each masked token costs sigma' log(N) / e_sigma."""
    torch.manual_seed(0)
    model = SEDD(tiny_config(tokens=50257)).eval()
    graph, noise = Absorbing(50257), LogLinear()
    x0 = torch.randint(0, 50257, (3, 8))
    sigma, rate = noise(t)
    xt = graph.sample_transition(x0, sigma, generator=torch.Generator().manual_seed(0))
    expected = rate * (xt == 50257).sum(-1) * math.log(50257) / torch.expm1(sigma)
    return model, graph, noise, x0, xt, expected.float()


def test_initial_loss_matches_closed_form():
    """The per-sequence loss is exact; its expectation over t is
    log(N) (e^-sigma(eps_s) - e^-sigma(1)) / (1 - eps_s) = 10.81408 per token for N = 50257."""
    t = torch.tensor([0.05, 0.5, 0.97])
    model, graph, noise, x0, xt, expected = zero_init_loss_case(t)
    torch.testing.assert_close(score_entropy_loss(model, graph, noise, x0, t=t, perturbed=xt), expected, rtol=1e-5, atol=1e-4)
    eps_s = 1e-3
    per_token = math.log(50257) * (math.exp(-noise.total_noise(torch.tensor(eps_s, dtype=torch.float64)).item()) - 1e-3) / (1 - eps_s)
    assert per_token == pytest.approx(10.81408, abs=5e-6)


def test_loss_accepts_t_as_column_or_scalar():
    """t of shape [B, 1] (the samplers' layout) or a scalar gives the same per-sequence loss [B] as t of shape [B]
    (a [B, 1] t used to broadcast sigma' against [B, L] into a [B, B] 'loss')."""
    t = torch.tensor([0.3, 0.3, 0.3])
    model, graph, noise, x0, xt, expected = zero_init_loss_case(t)
    for tt in (t, t[:, None], torch.tensor(0.3)):
        loss = score_entropy_loss(model, graph, noise, x0, t=tt, perturbed=xt)
        assert loss.shape == (3,)
        torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-4)
    with pytest.raises(UserError, match="t has 2 entries"):
        score_entropy_loss(model, graph, noise, x0, t=torch.tensor([0.3, 0.4]))


# ---------------------------------------------------------------- checkpoints (I14)
def test_small_and_medium_parameter_counts_and_keys():
    with torch.device("meta"):
        small = SEDD(SEDDConfig.preset("small"))
        medium = SEDD(SEDDConfig.preset("medium"))
    assert small.num_parameters() == 169_627_218
    assert small.num_parameters(non_embedding=True) == 92_380_672  # the paper's "~90M non-embedding"
    assert medium.num_parameters() == 424_477_010
    sd = small.state_dict()
    assert len([k for k, v in small.named_parameters()]) == 130 and len(sd) == 131
    shapes = {
        "vocab_embed.embedding": (50258, 768),
        "sigma_map.mlp.0.weight": (128, 256),
        "sigma_map.mlp.2.weight": (128, 128),
        "rotary_emb.inv_freq": (32,),
        "blocks.0.norm1.weight": (768,),
        "blocks.0.attn_qkv.weight": (2304, 768),
        "blocks.0.attn_out.weight": (768, 768),
        "blocks.0.mlp.0.weight": (3072, 768),
        "blocks.0.mlp.2.bias": (768,),
        "blocks.11.adaLN_modulation.weight": (4608, 128),
        "output_layer.norm_final.weight": (768,),
        "output_layer.linear.weight": (50258, 768),
        "output_layer.linear.bias": (50258,),
        "output_layer.adaLN_modulation.weight": (1536, 128),
    }
    for k, shape in shapes.items():
        assert tuple(sd[k].shape) == shape, k
    assert len(medium.state_dict()) == 251


def test_save_pretrained_round_trip_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    model = randomise(SEDD(tiny_config())).eval()
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = SEDD.from_pretrained(tmp_path)
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    x = torch.randint(0, 17, (2, 8))
    assert torch.equal(model(x, torch.tensor([0.5, 1.0])), loaded(x, torch.tensor([0.5, 1.0])))


def test_loads_reference_layout_pickle_without_rotary_buffer(tmp_path):
    """The released repos hold config.json + pytorch_model.bin; the rotary buffer may be absent."""
    torch.manual_seed(0)
    model = randomise(SEDD(tiny_config()))
    state = {k: v for k, v in model.state_dict().items() if k != "rotary_emb.inv_freq"}
    torch.save(state, tmp_path / "pytorch_model.bin")
    official = {"ngpus": 8, "tokens": 16, "training": {"batch_size": 512}, "data": {"train": "openwebtext"},
                "graph": {"type": "absorb", "file": "data", "report_all": False},
                "noise": {"type": "loglinear", "sigma_min": 1e-4, "sigma_max": 20},
                "sampling": {"predictor": "euler", "steps": 128, "noise_removal": True},
                "model": {"name": "tiny", "type": "ddit", **TINY, "scale_by_sigma": True, "dropout": 0.1}}
    (tmp_path / "config.json").write_text(json.dumps(official))
    loaded = SEDD.from_pretrained(tmp_path)
    for k, v in state.items():
        assert torch.equal(loaded.state_dict()[k], v)
    assert loaded.config.to_dict() == official  # unknown-to-pysedd sections survive a round trip


def test_pickle_with_code_is_refused(tmp_path):
    model = SEDD(tiny_config())
    model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(UserError, match="weights_only"):
        SEDD.from_pretrained(tmp_path)


def test_strict_load_names_every_problem(tmp_path):
    model = SEDD(tiny_config())
    state = model.state_dict()
    state.pop("blocks.1.norm2.weight")
    state["blocks.0.extra"] = torch.zeros(1)
    state["output_layer.linear.bias"] = torch.zeros(5)
    model.save_pretrained(tmp_path)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    with pytest.raises(UserError) as err:
        SEDD.from_pretrained(tmp_path)
    msg = str(err.value)
    assert "missing keys: blocks.1.norm2.weight" in msg
    assert "unexpected keys: blocks.0.extra" in msg
    assert "output_layer.linear.bias: checkpoint (5,) vs model (17,)" in msg


def test_hub_id_offline_gives_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match="louaaron/sedd-small.*(offline|not reachable|OFFLINE)"):
        SEDD.from_pretrained("louaaron/sedd-small")


def test_missing_directory_and_file_arguments(tmp_path):
    with pytest.raises(UserError, match="no such model directory"):
        SEDD.from_pretrained(tmp_path / "nope" / "deeper")
    (tmp_path / "f.bin").write_bytes(b"x")
    with pytest.raises(UserError, match="is a file"):
        SEDD.from_pretrained(tmp_path / "f.bin")


# ---------------------------------------------------------------- config and bad input
def test_config_rejects_bad_values():
    """Unknown fields are tolerated (tests/test_loader.py); bad values of known ones are named."""
    d = tiny_config().to_dict()
    d["graph"]["type"] = "bogus"
    with pytest.raises(UserError, match="graph.type"):
        SEDDConfig.from_dict(d)
    d = tiny_config().to_dict()
    d["graph"]["type"] = "uniform"
    with pytest.raises(UserError, match="scale_by_sigma"):
        SEDDConfig.from_dict(d)
    with pytest.raises(UserError, match="divisible"):
        SEDDConfig.preset("tiny", hidden_size=30, n_heads=4)
    with pytest.raises(UserError, match="unknown model preset"):
        SEDDConfig.preset("huge")


def test_forward_rejects_bad_input():
    model = SEDD(tiny_config()).eval()
    with pytest.raises(UserError, match=r"\[batch, length\]"):
        model(torch.zeros(8, dtype=torch.long), torch.tensor([0.1]))
    with pytest.raises(UserError, match="outside|must lie in"):
        model(torch.full((1, 8), 17), torch.tensor([0.1]))
    with pytest.raises(UserError, match="sigma must be >= 0"):
        model(torch.zeros(1, 8, dtype=torch.long), torch.tensor([-0.1]))
    with pytest.raises(UserError, match="entries for a batch"):
        model(torch.zeros(2, 8, dtype=torch.long), torch.tensor([0.1, 0.2, 0.3]))
    with pytest.raises(UserError, match="integer token ids"):
        model(torch.zeros(1, 8), torch.tensor([0.1]))
    with pytest.raises(UserError, match="MASK id"):
        score_entropy_loss(model, Absorbing(16), LogLinear(), torch.full((1, 8), 16))


def test_hub_weights_missing_from_offline_cache_gives_offline_error(monkeypatch, tmp_path):
    """config.json cached but no weights: LocalEntryNotFoundError subclasses EntryNotFoundError in huggingface_hub, so
    it must be told apart from a repo that lacks the file (the released repos have no model.safetensors)."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    (tmp_path / "config.json").write_text(json.dumps(tiny_config().to_dict()))

    def fake_download(repo_id, filename, revision=None):
        if filename == "config.json":
            return str(tmp_path / "config.json")
        raise LocalEntryNotFoundError(f"{filename} not in cache")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    with pytest.raises(UserError, match="louaaron/sedd-small.*not in the local hub cache"):
        SEDD.from_pretrained("louaaron/sedd-small")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sigma_features_on_cuda_use_the_cpu_frequency_table():
    """The reference builds exp(-ln(10000) k/128) on the CPU and moves it; CUDA's expf may differ in the last bit."""
    half = 128
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    sigma = torch.linspace(0, 7, 33, device="cuda")
    args = sigma[:, None] * freqs.cuda()[None]
    assert torch.equal(SigmaEmbedding.features(sigma), torch.cat([args.cos(), args.sin()], -1))


def test_rotary_in_bf16_rounds_once_like_the_reference_kernel():
    """Under bf16 autocast the reference rotates q and k with flash-attn's rotary kernel: bf16 q/k and bf16-rounded
    cos/sin, products and sum in float32, one rounding to bf16 at the end."""
    torch.manual_seed(0)
    x = torch.randn(2, 16, 3, 64).bfloat16()
    t = torch.arange(16).float()
    freqs = torch.outer(t, 1.0 / (10000 ** (torch.arange(0, 64, 2).float() / 64)))
    cos, sin = torch.cat([freqs, freqs], -1).cos(), torch.cat([freqs, freqs], -1).sin()
    c, s = cos.bfloat16().float()[None, :, None], sin.bfloat16().float()[None, :, None]
    x1, x2 = x.float().chunk(2, dim=-1)  # bf16 x bf16 products are exact in float32
    expected = (x.float() * c + torch.cat([-x2, x1], -1) * s).bfloat16()
    assert torch.equal(apply_rotary(x, cos, sin), expected)


def test_reference_run_directory_loads_the_newest_numbered_checkpoint_with_ema(tmp_path):
    """A reference run dir (.hydra/config.yaml + checkpoints/checkpoint_<step//50000>.pth, no meta checkpoint): the
    newest numbered checkpoint is step 26 (not '9', which sorts after '26' as text), and its EMA weights are used."""
    import yaml

    cfg = tiny_config()
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    (tmp_path / "checkpoints").mkdir()
    ema = {}
    for n in (9, 26):
        torch.manual_seed(n)
        model = randomise(SEDD(cfg))
        ema[n] = [torch.randn_like(p) for p in model.parameters()]
        torch.save({"model": model.state_dict(), "step": n * 50000,
                    "ema": {"decay": 0.9999, "num_updates": n, "shadow_params": ema[n]}},
                   tmp_path / "checkpoints" / f"checkpoint_{n}.pth")
    loaded = SEDD.from_pretrained(tmp_path)
    for p, s in zip(loaded.parameters(), ema[26]):
        assert torch.equal(p, s)

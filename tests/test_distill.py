"""Self-distillation through time: the two-step target against brute-force enumeration, the loss's zero, and one
real round on demo data (docs/distillation.md)."""
import itertools
import math

import pytest
import torch
import torch.nn as nn

from pysedd.graph import Absorbing
from pysedd.noise import LogLinear
from pysedd.train.distill import DIVERGENCES, DistillObjective, two_step_target

N, L = 3, 3  # real tokens, positions: small enough to enumerate every intermediate state


class ContextOracle(nn.Module):
    """A denoiser that depends on the position, sigma AND the other positions' unmasked tokens (so the two-step map
    of one position depends on the other positions' first-step draws); ideal scale: s_j = p_j / (e^sigma - 1)."""

    scale_by_sigma = True

    def __init__(self, context: float = 1.5, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(L, N, generator=g, dtype=torch.float64))
        self.u = nn.Parameter(context * torch.randn(N, N, generator=g, dtype=torch.float64))
        self.c = nn.Parameter(torch.randn(N, generator=g, dtype=torch.float64))

    def denoiser(self, x, sigma):
        onehot = torch.nn.functional.one_hot(x, N + 1)[..., :N].double()  # unmasked tokens (MASK -> zeros)
        others = onehot.sum(1, keepdim=True) - onehot  # the other positions' tokens
        logits = self.w[None] + others @ self.u + sigma.double()[:, None, None] * self.c
        return torch.log_softmax(logits, -1)

    def forward(self, x, sigma):
        out = torch.zeros(*x.shape, N + 1, dtype=torch.float64)
        out[..., :N] = self.denoiser(x, sigma) - torch.log(torch.expm1(sigma.double()))[:, None, None]
        return out.scatter(-1, x[..., None], 0.0)


def step_probs(model, graph, noise, x, t, dt):
    """The sampler's analytic step (staggered score x transposed transition), normalised: [B, L, N + 1]."""
    dsigma = noise.total_noise(t) - noise.total_noise((t - dt).clamp_min(0.0))  # Tweedie tau-leaping over [t - dt, t]
    score = model(x, noise.total_noise(t)).exp()
    probs = graph.staggered_score(score, dsigma[:, None]) * graph.transp_transition(x, dsigma[:, None])
    return probs / probs.sum(-1, keepdim=True)


@pytest.mark.parametrize("partial", [False, True])
def test_two_step_target_is_unbiased_for_the_exact_two_step_marginal(partial):
    """Σ over every first-step state x_mid of P(x_mid | x_t) times the estimator = the exact marginal of each masked
    position after two analytic steps, computed by enumerating the sampler's own step probabilities."""
    graph, noise, model = Absorbing(N), LogLinear(), ContextOracle().requires_grad_(False)
    x_t = torch.tensor([[N, 1, N]]) if partial else torch.full((1, L), N)
    t, delta = torch.tensor([0.7], dtype=torch.float64), 0.2
    p1 = step_probs(model, graph, noise, x_t, t, delta)[0]  # [L, N + 1]
    exact = torch.zeros(L, N + 1, dtype=torch.float64)
    estimate = torch.zeros(L, N + 1, dtype=torch.float64)
    masked = (x_t[0] == N).nonzero().flatten().tolist()
    for choice in itertools.product(range(N + 1), repeat=len(masked)):
        x_mid = x_t.clone()
        x_mid[0, masked] = torch.tensor(choice)
        prob = math.prod(float(p1[i, v].detach()) for i, v in zip(masked, choice))
        exact += prob * step_probs(model, graph, noise, x_mid, t - delta, delta)[0]
        rows, log_target, pi12, weight = two_step_target(model, graph, noise, x_t, t, delta, x_mid=x_mid)
        for b, i, lt, pi, w in zip(*rows, log_target, pi12, weight):
            estimate[i, :N] += prob * w * pi * lt.double().exp()
            estimate[i, N] += prob * w * (1 - pi)
    assert torch.allclose(estimate[masked], exact[masked], atol=2e-6)
    # and the context matters here: the exact marginal differs from the one that ignores first-step draws
    no_context = step_probs(model, graph, noise, x_t, t, 2 * delta)[0]
    assert (exact[masked] - no_context[masked]).abs().max() > 1e-2


class TwoStepStudent(nn.Module):
    """For a context-free teacher, the exact two-step map as a one-step model: at (x_t, sigma_t) its denoiser is
    (π1 p(σ_t) + (π12 - π1) p(σ_{t-Δ})) / π12 with π(t -> s) = (t - s) / t (loglinear), and ideal score scale."""

    scale_by_sigma = True

    def __init__(self, teacher, noise, delta, perturb=0.0):
        super().__init__()
        self.teacher, self.noise, self.delta, self.perturb = teacher, noise, delta, perturb
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x, sigma):
        sigma = sigma.double()
        t = -torch.expm1(-sigma) / (1 - self.noise.eps)
        s1, s2 = t - self.delta, (t - 2 * self.delta).clamp_min(0)
        pi1, pi12 = ((t - s1) / t)[:, None, None], ((t - s2) / t)[:, None, None]
        p1 = self.teacher.denoiser(x, sigma).exp()
        p2 = self.teacher.denoiser(x, self.noise.total_noise(s1)).exp()
        p = (pi1 * p1 + (pi12 - pi1) * p2) / pi12
        logits = p.log() + self.perturb * torch.arange(N, dtype=torch.float64)
        out = torch.zeros(*x.shape, N + 1, dtype=torch.float64)
        out[..., :N] = torch.log_softmax(logits, -1) - torch.log(torch.expm1(sigma))[:, None, None]
        return out.scatter(-1, x[..., None], 0.0)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_loss_is_zero_for_the_two_step_map_and_positive_otherwise(divergence):
    """Context-free teacher (u = 0): the two-step map factorises over positions, so the production objective, with
    its sampled times, noising and first-step draws, must be exactly zero for the student that IS that map."""
    graph, noise = Absorbing(N), LogLinear()
    teacher = ContextOracle(context=0.0)
    steps = 8
    delta = (1 - 1e-5) / steps
    x0 = torch.randint(0, N, (64, L), generator=torch.Generator().manual_seed(1))
    losses = {}
    for name, student in (("exact", TwoStepStudent(teacher, noise, delta)),
                          ("perturbed", TwoStepStudent(teacher, noise, delta, perturb=0.3)),
                          ("teacher", teacher)):
        objective = DistillObjective(student, teacher, graph, noise, steps, divergence)
        losses[name] = objective(x0, generator=torch.Generator().manual_seed(0))
    assert losses["exact"].abs().max() < 1e-5
    assert losses["perturbed"].sum() > 1e-3 and losses["teacher"].sum() > 1e-3
    assert (losses["perturbed"] >= -1e-6).all() and (losses["teacher"] >= -1e-6).all()


# ---- stored teacher targets ----------------------------------------------------------------------------------------

def _store(tmp_path, n_examples, top_k, n_tokens=N):
    from pysedd.train.distill import TargetStore

    return TargetStore(tmp_path / "targets", dict(teacher={"test": 1}, teacher_steps=8, eps=1e-5, data_sha256="x",
                                                  seq_len=L, n_examples=n_examples, n_tokens=n_tokens, top_k=top_k,
                                                  seed=0))


@pytest.mark.parametrize("top_k", [0, N - 1])
def test_stored_targets_give_the_on_the_fly_loss(tmp_path, top_k):
    """The teacher's draws written to a store and read back (in any order) give the loss the on-the-fly objective
    computes from the same generator: exactly for whole rows, and for K = N - 1 too, where the one token left out
    carries exactly the residual mass."""
    from pysedd.train.distill import EXAMPLES_PER_SHARD, distill_loss, draw_targets

    graph, noise = Absorbing(N), LogLinear()
    teacher, student = ContextOracle(seed=0).requires_grad_(False), ContextOracle(seed=3).requires_grad_(False)
    steps, n = 8, 2 * EXAMPLES_PER_SHARD
    x0 = torch.randint(0, N, (n, L), generator=torch.Generator().manual_seed(1))
    store = _store(tmp_path, n, top_k)
    for s in range(2):
        part = slice(s * EXAMPLES_PER_SHARD, (s + 1) * EXAMPLES_PER_SHARD)
        store.write_shard(s, draw_targets(teacher, graph, noise, x0[part], steps, generator=torch.Generator().manual_seed(s)))
    assert not store.complete
    store.finish()
    store = _store(tmp_path, n, top_k).open()
    objective = DistillObjective(student, teacher, graph, noise, steps)
    for s in range(2):
        part = slice(s * EXAMPLES_PER_SHARD, (s + 1) * EXAMPLES_PER_SHARD)
        expected = objective(x0[part], generator=torch.Generator().manual_seed(s))
        got = distill_loss(student, noise, store.examples(list(range(part.start, part.stop))), objective.delta,
                           "reverse_kl", N)
        if top_k == 0:
            assert torch.equal(got, expected)
        else:
            assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)
        assert expected.sum() > 1e-3
    shuffled = [29, 3, 17, 3]
    per_example = [distill_loss(student, noise, store.examples([i]), objective.delta, "reverse_kl", N) for i in shuffled]
    assert torch.allclose(distill_loss(student, noise, store.examples(shuffled), objective.delta, "reverse_kl", N),
                          torch.cat(per_example))


def test_truncated_target_keeps_the_top_k_and_spreads_the_rest():
    from pysedd.train.distill import expand_target, truncate_target

    n_tokens, k = 50, 5
    log_target = torch.log_softmax(3 * torch.randn(7, n_tokens, generator=torch.Generator().manual_seed(0)), -1)
    dense = expand_target(*truncate_target(log_target, k), n_tokens)
    assert torch.allclose(torch.logsumexp(dense.double(), -1), torch.zeros(7, dtype=torch.float64), atol=1e-6)
    top = log_target.topk(k, -1)
    assert torch.equal(dense.gather(1, top.indices), top.values)
    rest = torch.ones_like(dense, dtype=torch.bool).scatter_(1, top.indices, False)
    residual = (1 - top.values.double().exp().sum(-1)) / (n_tokens - k)
    assert torch.allclose(dense[rest].view(7, -1).double().exp(), residual[:, None].expand(-1, n_tokens - k),
                          rtol=1e-5)


def test_target_store_refuses_damaged_or_foreign_files(tmp_path):
    from pysedd.errors import UserError
    from pysedd.train.distill import EXAMPLES_PER_SHARD, draw_targets

    graph, noise, teacher = Absorbing(N), LogLinear(), ContextOracle().requires_grad_(False)
    store = _store(tmp_path, EXAMPLES_PER_SHARD, 0)
    x0 = torch.randint(0, N, (EXAMPLES_PER_SHARD, L), generator=torch.Generator().manual_seed(1))
    store.write_shard(0, draw_targets(teacher, graph, noise, x0, 8, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(UserError, match="unreadable"):
        _store(tmp_path, EXAMPLES_PER_SHARD, 0).open()  # unfinished: no store.json
    store.finish()
    index = store.dir / "store.json"
    original = index.read_text()
    for damage, message in [(lambda t: t.replace('"top_k": 0', '"top_k": 1'), "other settings"),
                            (lambda t: t.replace("shard-000000.safetensors", "../shard-000000.safetensors"),
                             "does not list"),
                            (lambda t: t.replace('"bytes": ', '"bytes": 1'), "wrong size"),
                            (lambda t: "{", "unreadable")]:
        index.write_text(damage(original))
        with pytest.raises(UserError, match=message):
            _store(tmp_path, EXAMPLES_PER_SHARD, 0).open()
    index.write_text(original)
    shard = store.shard_path(0)
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.raises(UserError, match="sha256"):
        _store(tmp_path, EXAMPLES_PER_SHARD, 0).open().examples([0])
    _store(tmp_path, EXAMPLES_PER_SHARD, 0).open(verify="size").examples([0])  # 'size' trusts the bytes


def test_distill_with_stored_targets_computes_them_once_and_shares_them(tmp_path, data_dir):
    """`pysedd distill --precompute-targets`: the first run stores the targets (resumable shards, store.json last)
    and trains on them; a second run with another divergence and the same --targets reuses them; a damaged shard is
    one line and exit 2."""
    import subprocess
    import sys

    from pysedd.config import SEDDConfig
    from pysedd.model import SEDD
    from pysedd.train.distill import read_student_steps

    teacher = tmp_path / "teacher"
    torch.manual_seed(0)
    SEDD(SEDDConfig.preset("tiny", length=16, hidden_size=32, n_blocks=1, n_heads=2)).save_pretrained(teacher)
    targets = tmp_path / "targets"

    def distill(out, *extra):
        argv = [sys.executable, "-m", "pysedd", "distill", "--teacher", str(teacher), "--data", str(data_dir),
                "--out", str(tmp_path / out), "--rounds", "1", "--steps", "4", "--train-steps", "2",
                "--batch-size", "4", "--warmup-steps", "1", "--eval-every", "0", "--no-progress",
                "--precompute-targets", "20", "--targets", str(targets), "--target-top-k", "8", *extra]
        return subprocess.run(argv, capture_output=True, text=True, timeout=600)

    first = distill("a")
    assert first.returncode == 0, first.stderr[-2000:]
    assert "storing the teacher targets of 20 sequences" in first.stderr
    [store] = targets.iterdir()
    assert sorted(p.name for p in store.iterdir()) == ["shard-000000.safetensors", "shard-000001.safetensors",
                                                       "store.json"]
    assert read_student_steps(tmp_path / "a" / "round-0" / "export") == 2
    second = distill("b", "--divergence", "kl")
    assert second.returncode == 0, second.stderr[-2000:]
    assert "reusing the stored teacher targets" in second.stderr and "storing" not in second.stderr
    shard = store / "shard-000001.safetensors"
    shard.write_bytes(shard.read_bytes()[:-1] + bytes([shard.read_bytes()[-1] ^ 1]))
    third = distill("c", "--divergence", "tv")
    assert third.returncode == 2
    line = third.stderr.strip().splitlines()[-1]
    assert line.startswith("pysedd: error: ") and "sha256" in line and "Traceback" not in third.stderr


def test_bad_inputs(tmp_path, capsys):
    from pysedd.cli import main

    cases = [
        (["--teacher", "x", "--data", "d", "--rounds", "3", "--steps", "12"], "divisible by 2^rounds"),
        (["--teacher", "x", "--data", "d", "--steps", "16", "--target-top-k", "8"], "set precompute_targets"),
        (["--data", "d", "--steps", "16"], "no teacher"),
        (["--teacher", str(tmp_path / "none"), "--data", str(tmp_path / "none"), "--steps", "16"], "error"),
    ]
    for argv, text in cases:
        assert main(["distill", "--out", str(tmp_path / "run"), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("pysedd: error:") and len(err.splitlines()) == 1 and text in err


@pytest.mark.slow
def test_one_round_on_demo_data_brings_the_student_closer_to_the_teacher(tmp_path):
    """A real round (tiny teacher trained on the demo corpus, `pysedd distill`, exported student reloaded): at S/2
    steps the student is closer to the teacher at S steps than the teacher itself at S/2 steps, (1) in held-out
    step divergence (same x_t, same teacher targets) and (2) in judge perplexity of unconditional samples."""
    from pysedd.ar import load_ar_model
    from pysedd.cli import main
    from pysedd.data import PackedDataset
    from pysedd.eval.common import ar_token_nll
    from pysedd.graph import get_graph
    from pysedd.model import SEDD
    from pysedd.noise import get_noise
    from pysedd.sampling import pc_sample
    from pysedd.train.distill import heldout_divergence, read_student_steps

    data = tmp_path / "data"
    assert main(["prepare", "demo", "--out", str(data), "--seq-len", "32", "--val-fraction", "0.1"]) == 0
    common = ["--data", str(data), "--batch-size", "8", "--lr", "1e-3", "--warmup-steps", "10", "--eval-every", "0",
              "--no-progress", "--hidden-size", "64", "--n-blocks", "2", "--n-heads", "2"]
    assert main(["train", "--preset", "cpu-tiny", "--model", "sedd", "--out", str(tmp_path / "teacher"),
                 "--steps", "150", "--ema-decay", "0.99", *common]) == 0
    assert main(["train", "--preset", "cpu-tiny", "--model", "gpt2", "--out", str(tmp_path / "judge"),
                 "--steps", "150", "--seed", "1", *common]) == 0
    steps = 4
    assert main(["distill", "--teacher", str(tmp_path / "teacher" / "export"), "--data", str(data), "--out",
                 str(tmp_path / "distill"), "--rounds", "1", "--steps", str(steps), "--train-steps", "60",
                 "--batch-size", "8", "--lr", "3e-4", "--warmup-steps", "5", "--ema-decay", "0.99",
                 "--no-progress"]) == 0
    export = tmp_path / "distill" / "round-0" / "export"
    assert read_student_steps(export) == steps // 2
    teacher, student = SEDD.from_pretrained(tmp_path / "teacher" / "export"), SEDD.from_pretrained(export)

    x0 = PackedDataset(data, "validation").batch(list(range(32)))
    assert heldout_divergence(student, teacher, x0, steps) < 0.5 * heldout_divergence(teacher, teacher, x0, steps)

    judge = load_ar_model(tmp_path / "judge" / "export")
    graph, noise = get_graph("absorb", teacher.config.tokens), get_noise(teacher.config.noise)

    def judge_nll(model, n_steps):
        x = pc_sample(model, graph, noise, 128, 32, n_steps, seed=0).samples
        return float(ar_token_nll(judge, x).mean())

    reference = judge_nll(teacher, steps)
    assert abs(judge_nll(student, steps // 2) - reference) < abs(judge_nll(teacher, steps // 2) - reference)

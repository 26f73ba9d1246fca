"""Samplers against exact distributions (oracle scores of a factorised distribution), conditioning, exact NFE counts of
the first-hitting sampler, the cache, reproducibility and input errors (docs/sedd.md, invariants I10, I11)."""
import math

import pytest
import torch
from scipy.stats import chisquare

from oracles import (FactorisedAbsorbOracle, FactorisedUniformOracle, TimeConditionedAbsorbOracle, forward_only,
                     random_factorised)
from pysedd.config import SEDDConfig
from pysedd.errors import UserError
from pysedd.graph import Absorbing, Uniform
from pysedd.model import SEDD
from pysedd.noise import Geometric, LogLinear
from pysedd.sampling import Conditioning, fhs_sample, pc_sample

N, L, DRAWS = 3, 3, 6000


def joint_pvalue(samples: torch.Tensor, p: torch.Tensor) -> float:
    """Chi-square p-value of the joint counts of [n, L] samples against the product distribution p [L, N]."""
    n_tok = p.shape[1]
    codes = (samples * n_tok ** torch.arange(samples.shape[1])).sum(1)
    counts = torch.bincount(codes, minlength=n_tok ** samples.shape[1]).double()
    grids = torch.meshgrid(*[torch.arange(n_tok)] * samples.shape[1], indexing="ij")
    expected = torch.ones(grids[0].shape, dtype=torch.float64)
    for l, g in enumerate(grids):
        expected = expected * p[l][g]
    expected = expected.permute(*reversed(range(samples.shape[1]))).reshape(-1) * samples.shape[0]
    return chisquare(counts.numpy(), expected.numpy()).pvalue


@pytest.mark.parametrize("interface,dtype", [("rows", torch.float32), ("rows", torch.float64),
                                             ("forward", torch.float32), ("forward", torch.float64)])
@pytest.mark.parametrize("oracle_cls", [FactorisedAbsorbOracle, TimeConditionedAbsorbOracle])
@pytest.mark.parametrize("predictor,steps", [("analytic", 3), ("euler", 7), ("analytic", 40)])
def test_absorb_step_samplers_draw_the_exact_distribution(oracle_cls, predictor, steps, interface, dtype):
    """With exact scores the absorbing analytic step is the exact posterior (and Euler == analytic for loglinear),
    so any number of steps gives the data distribution. "rows": the oracle has SEDD's hidden_states + head, so this
    is the masked-rows path `pysedd sample` takes on CPU; "forward": full outputs, which go through the compiled
    kernel for float32 when it is built and through the PyTorch dispatcher path otherwise."""
    p = random_factorised(L, N, seed=1)
    oracle = oracle_cls(p, dtype)
    model = oracle if interface == "rows" else forward_only(oracle)
    out = pc_sample(model, Absorbing(N), LogLinear(), DRAWS, L, steps, predictor, seed=3)
    assert (oracle.head_rows > 0) == (interface == "rows")
    assert (out.samples < N).all()
    assert joint_pvalue(out.samples, p) > 1e-3
    # calls stop once nothing is masked (the remaining steps could change nothing)
    assert out.nfe <= steps + 1 and out.tokens == DRAWS * L and out.wall_time > 0


@pytest.mark.parametrize("k", [1, 2, 3])
def test_first_hitting_sampler_draws_the_exact_distribution(k):
    """FHS is exact; k tokens per call draws them independently, which is still exact for factorised data."""
    p = random_factorised(L, N, seed=2)
    out = fhs_sample(FactorisedAbsorbOracle(p), Absorbing(N), LogLinear(), DRAWS, L, tokens_per_call=k, seed=4)
    assert (out.samples < N).all()
    assert joint_pvalue(out.samples, p) > 1e-3
    assert out.nfe == math.ceil(L / k)


def test_uniform_analytic_sampler_draws_the_exact_distribution():
    """Per position, Tweedie tau-leaping with exact ratios is the exact posterior, whatever the step size."""
    p = random_factorised(L, N, seed=3)
    out = pc_sample(FactorisedUniformOracle(p), Uniform(N), Geometric(), DRAWS, L, 5, "analytic", seed=5)
    assert joint_pvalue(out.samples, p) > 1e-3


def test_uniform_euler_sampler_converges_to_the_distribution():
    """Euler is first order: with many steps its marginals are close to the truth (not exact at finite steps)."""
    p = random_factorised(L, N, seed=3)
    out = pc_sample(FactorisedUniformOracle(p), Uniform(N), Geometric(), DRAWS, L, 128, "euler", seed=6)
    freq = torch.stack([torch.bincount(out.samples[:, l], minlength=N) for l in range(L)]).double() / DRAWS
    assert (freq - p).abs().max() < 0.03


def spy_checks_fixed(model, mask, values):
    """Every row the model saw holds the fixed ids (FHS passes only the rows that still have masks)."""
    assert model.calls
    for x, _ in model.calls:
        if x.shape[0] == mask.shape[0]:
            assert torch.equal(x[mask], values[mask]), "a fixed position reached the model unclamped"
        for row in x:
            assert any(torch.equal(row[m], v[m]) for m, v in zip(mask, values)), "a fixed position reached the model unclamped"


CONDITIONS = {
    "prefix": Conditioning.prefix([2, 0]),
    "suffix": Conditioning.suffix([1]),
    "prefix+suffix": Conditioning.prefix([1]) + Conditioning.suffix([2]),
    "per-row infill": Conditioning([[1], [0, 4], [3], [2, 3]], [[2], [1, 1], [0], [0, 0]]),
    "from mask": Conditioning.from_mask(torch.tensor([False, True, False, False, True]), torch.tensor([0, 2, 0, 0, 1])),
}


@pytest.mark.parametrize("name", list(CONDITIONS))
@pytest.mark.parametrize("sampler", ["analytic", "euler", "fhs", "uniform"])
def test_conditioning_never_changes_fixed_positions(name, sampler):
    cond, length, batch = CONDITIONS[name], 5, 4
    p = random_factorised(length, N, seed=4)
    graph = Uniform(N) if sampler == "uniform" else Absorbing(N)
    model = FactorisedUniformOracle(p) if sampler == "uniform" else FactorisedAbsorbOracle(p)
    mask, values = cond.resolve(batch, length, N, "cpu")
    if sampler == "fhs":
        out = fhs_sample(model, graph, LogLinear(), batch, length, conditioning=cond, seed=0)
        assert out.nfe == int((~mask).sum(1).max())
    else:
        noise = Geometric() if sampler == "uniform" else LogLinear()
        out = pc_sample(model, graph, noise, batch, length, 6, "euler" if sampler == "euler" else "analytic",
                        conditioning=cond, seed=0)
    assert torch.equal(out.samples[mask], values[mask])
    assert (out.samples < N).all()
    assert out.tokens == batch * length - int(mask.sum())
    spy_checks_fixed(model, mask, values)


def test_conditioned_free_positions_keep_their_distribution():
    """For factorised data, clamping positions must not disturb the others' law."""
    p = random_factorised(4, N, seed=5)
    cond = Conditioning([0, 2], [1, 2])
    for out in (pc_sample(FactorisedAbsorbOracle(p), Absorbing(N), LogLinear(), DRAWS, 4, 4, conditioning=cond, seed=1),
                fhs_sample(FactorisedAbsorbOracle(p), Absorbing(N), LogLinear(), DRAWS, 4, conditioning=cond, seed=1)):
        free = out.samples[:, [1, 3]]
        assert joint_pvalue(free, p[[1, 3]]) > 1e-3


class CountingSEDD(SEDD):
    """A SEDD that counts its network passes (forward or hidden_states)."""

    def hidden_states(self, indices, sigma):
        self.passes = getattr(self, "passes", 0) + 1
        self.sigmas = getattr(self, "sigmas", []) + [sigma.clone()]
        return super().hidden_states(indices, sigma)


def tiny_sedd(tokens=11, graph="absorb", seed=0, time_dependent=False):
    torch.manual_seed(seed)
    cfg = SEDDConfig.preset("tiny", tokens=tokens, graph=graph, hidden_size=32, cond_dim=16, n_blocks=1, n_heads=4)
    model = CountingSEDD(cfg).eval()
    if time_dependent:  # the adaLN maps are zero at init; make the network really depend on sigma
        for name, param in model.named_parameters():
            if "adaLN" in name or "output_layer.linear" in name:
                torch.nn.init.normal_(param, std=0.2)
    return model


@pytest.mark.parametrize("batch", [2, 5])
def test_first_hitting_sampler_makes_exactly_length_calls_at_any_batch(batch):
    model, length = tiny_sedd(), 9
    out = fhs_sample(model, Absorbing(11), LogLinear(), batch, length, seed=0)
    assert model.passes == out.nfe == length
    assert (out.samples < 11).all()
    # every row has its own clock: the sigmas of one call differ across rows and decrease within a row
    sig = torch.stack(model.sigmas)  # [L, B]
    assert (sig[1:] < sig[:-1]).all() and (sig[0] != sig[0, 0]).any()


def test_first_hitting_k_tokens_per_call():
    model = tiny_sedd()
    out = fhs_sample(model, Absorbing(11), LogLinear(), 3, 10, tokens_per_call=4, seed=0)
    assert model.passes == out.nfe == 3 and (out.samples < 11).all()


@pytest.mark.parametrize("predictor", ["analytic", "euler"])
def test_cache_never_changes_the_result(predictor):
    """With a time-independent model, the cache skips exactly the calls whose input did not change and the draws are
    bit-identical to the uncached sampler's."""
    p = random_factorised(4, N, seed=6)
    runs = {mode: pc_sample(FactorisedAbsorbOracle(p), Absorbing(N), LogLinear(), 3, 4, 64, predictor, cache=mode, seed=9)
            for mode in ("off", "exact")}
    assert torch.equal(runs["off"].samples, runs["exact"].samples)
    assert runs["exact"].nfe < runs["off"].nfe / 2
    assert runs["exact"].nfe + runs["exact"].cache_hits == runs["off"].nfe
    # and it is not vacuous: a changed input is never served from the cache
    model = FactorisedAbsorbOracle(p)
    pc_sample(model, Absorbing(N), LogLinear(), 3, 4, 64, predictor, cache="exact", seed=9)
    xs = [x for x, _ in model.calls]
    assert all(not torch.equal(a, b) for a, b in zip(xs, xs[1:]))


def test_cache_modes_on_a_sigma_conditioned_model():
    model = tiny_sedd(time_dependent=True)
    with pytest.raises(UserError, match="time_independent"):
        pc_sample(model, Absorbing(11), LogLinear(), 2, 6, 32, cache="exact")
    out = pc_sample(model, Absorbing(11), LogLinear(), 2, 6, 200, cache="approximate", seed=0)
    assert out.nfe < 40 and out.cache_hits > 100 and out.nfe + out.cache_hits <= 201 and (out.samples < 11).all()
    with pytest.raises(UserError, match="absorbing"):
        pc_sample(tiny_sedd(graph="uniform"), Uniform(11), Geometric(), 2, 6, 4, cache="approximate")


@pytest.mark.parametrize("sampler", ["pc", "fhs"])
def test_seeded_samplers_are_reproducible(sampler):
    model = tiny_sedd(time_dependent=True)
    run = (lambda s: pc_sample(model, Absorbing(11), LogLinear(), 3, 7, 5, seed=s)) if sampler == "pc" else \
        (lambda s: fhs_sample(model, Absorbing(11), LogLinear(), 3, 7, seed=s))
    a, b, c = run(1).samples, run(1).samples, run(2).samples
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_uniform_graph_any_shape():
    out = pc_sample(tiny_sedd(graph="uniform"), Uniform(11), Geometric(), 3, 5, 2, "euler", seed=0)
    assert out.samples.shape == (3, 5) and out.nfe == 3


def test_trim_at_first_generated_eos():
    p = torch.full((6, N), 1e-9, dtype=torch.float64)
    p[:, 0] = 1.0
    p[3] = torch.tensor([0.0 + 1e-9, 0.0 + 1e-9, 1.0])  # position 3 is always token 2 (our "EOS")
    p = p / p.sum(1, keepdim=True)
    cond = Conditioning.prefix([2])  # a given EOS (like a BOS) does not count
    out = pc_sample(FactorisedAbsorbOracle(p), Absorbing(N), LogLinear(), 2, 6, 4, conditioning=cond, trim_eos=True, eos_id=2, seed=0)
    assert out.lengths.tolist() == [3, 3]
    assert out.sequences() == [[2, 0, 0], [2, 0, 0]]


def test_bad_input_gives_clear_errors():
    model, g, n = tiny_sedd(), Absorbing(11), LogLinear()
    with pytest.raises(UserError, match="steps must be a positive integer"):
        pc_sample(model, g, n, 2, 4, 0)
    with pytest.raises(UserError, match="fixes 5 tokens but the sequence has only 4"):
        pc_sample(model, g, n, 2, 4, 2, conditioning=Conditioning.prefix([1, 2, 3, 4, 5]))
    with pytest.raises(UserError, match="position 7 is out of range for length 4"):
        fhs_sample(model, g, n, 2, 4, conditioning=Conditioning([7], [1]))
    with pytest.raises(UserError, match=r"id 11 is outside the vocabulary \[0, 11\)"):
        pc_sample(model, g, n, 2, 4, 2, conditioning=Conditioning([0], [11]))  # the MASK id is not a token
    with pytest.raises(UserError, match="2 rows for a batch of 3"):
        pc_sample(model, g, n, 3, 4, 2, conditioning=Conditioning([[0], [1]], [[1], [1]]))
    with pytest.raises(UserError, match="unknown predictor"):
        pc_sample(model, g, n, 2, 4, 2, "heun")
    with pytest.raises(UserError, match="absorbing graph"):
        fhs_sample(tiny_sedd(graph="uniform"), Uniform(11), Geometric(), 2, 4)
    with pytest.raises(UserError, match="unknown cache mode"):
        pc_sample(model, g, n, 2, 4, 2, cache="yes")

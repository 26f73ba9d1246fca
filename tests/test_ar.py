"""GPT-2 sampling through transformers generate (tiny random GPT2LMHeadModel, no downloads) and per-token NLL."""
import pytest
import torch
from scipy.stats import chisquare

from pysedd.ar import GPT2_PRESETS, ar_sample, ar_token_nll, gpt2_config, load_ar_model
from pysedd.errors import UserError

V, EOS = 80, 79  # more than 50 tokens, so a stray default top_k=50 would show


@pytest.fixture(scope="module")
def gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=V, n_positions=64, n_embd=32, n_layer=2, n_head=2, bos_token_id=EOS, eos_token_id=EOS,
                     initializer_range=0.3, tie_word_embeddings=False)
    model = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # give EOS the first step's top probability: a banned EOS would be detected
        top = model(torch.tensor([[EOS]])).logits[0, -1].argmax()
        model.lm_head.weight[EOS] = model.lm_head.weight[top]
    return model


@torch.no_grad()
def manual_greedy(model, prefix, n):
    ids = prefix.clone()
    for _ in range(n):
        ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], 1)
    return ids[:, prefix.shape[1]:]


def test_greedy_with_and_without_kv_cache_is_identical_and_correct(gpt2):
    cached = ar_sample(gpt2, 3, 24, prompt_ids=[[1, 2], [3, 4], [5, 5]], greedy=True, use_cache=True)
    plain = ar_sample(gpt2, 3, 24, prompt_ids=[[1, 2], [3, 4], [5, 5]], greedy=True, use_cache=False)
    assert torch.equal(cached.samples, plain.samples)
    assert torch.equal(cached.samples[:, 2:], manual_greedy(gpt2, torch.tensor([[1, 2], [3, 4], [5, 5]]), 24))
    assert len(set(cached.samples[:, 2:].flatten().tolist())) > 3  # not a degenerate constant output
    assert cached.nfe == plain.nfe == 24 and cached.tokens == 72 and cached.samples.shape == (3, 26)


@torch.no_grad()
def test_ancestral_first_token_follows_the_softmax(gpt2):
    """top_k=0: no logits processor at all (transformers would otherwise apply top_k=50)."""
    out = ar_sample(gpt2, 4000, 1, top_k=0, seed=0)
    probs = torch.softmax(gpt2(torch.tensor([[EOS]])).logits[0, -1].double(), -1)
    assert probs.sort(descending=True).values[50:].sum() > 0.02  # a top-50 truncation would be detected
    assert probs[EOS] * 4000 > 100  # exact length must not ban EOS (min_new_tokens would)
    counts = torch.bincount(out.samples[:, 0], minlength=V).double()
    keep = probs * 4000 > 5
    expected = torch.cat([probs[keep], probs[~keep].sum()[None]]) * 4000
    observed = torch.cat([counts[keep], counts[~keep].sum()[None]])
    assert chisquare(observed.numpy(), expected.numpy()).pvalue > 1e-3


@torch.no_grad()
def test_top_k_and_nucleus_restrict_the_support(gpt2):
    logits = gpt2(torch.tensor([[EOS]])).logits[0, -1]
    top5 = set(logits.topk(5).indices.tolist())
    assert set(ar_sample(gpt2, 500, 1, top_k=5, seed=0).samples[:, 0].tolist()) <= top5
    probs, order = torch.softmax(logits.double(), -1).sort(descending=True)
    nucleus = set(order[: int((probs.cumsum(0) < 0.5).sum()) + 1].tolist())
    assert set(ar_sample(gpt2, 500, 1, top_p=0.5, seed=0).samples[:, 0].tolist()) <= nucleus


def test_exact_length_seeded_and_stop_at_eos(gpt2):
    a, b = ar_sample(gpt2, 4, 30, seed=3), ar_sample(gpt2, 4, 30, seed=3)
    assert torch.equal(a.samples, b.samples) and a.samples.shape == (4, 30) and a.nfe == 30
    assert not torch.equal(a.samples, ar_sample(gpt2, 4, 30, seed=4).samples)
    stop = ar_sample(gpt2, 4, 30, seed=3, stop_at_eos=True, eos_id=5)
    for row, n in zip(stop.samples.tolist(), stop.lengths.tolist()):
        assert 5 not in row[:n] and (n == 30 or row[n] == 5)


@torch.no_grad()
def test_token_nll_matches_log_softmax(gpt2):
    ids = torch.randint(0, V, (3, 12), generator=torch.Generator().manual_seed(0))
    nll = ar_token_nll(gpt2, ids, batch_size=2)
    logp = torch.log_softmax(gpt2(ids).logits.double(), -1)
    ref = -logp[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
    assert nll.shape == (3, 11) and nll.dtype == torch.float64
    torch.testing.assert_close(nll, ref, rtol=1e-5, atol=1e-5)


def test_presets_and_loader(tmp_path, gpt2):
    from transformers import GPT2LMHeadModel

    assert set(GPT2_PRESETS) >= {"tiny", "small", "medium", "large-1.3b"}
    big = gpt2_config("large-1.3b", n_positions=2048)
    n = 12 * big.n_layer * big.n_embd**2 + big.vocab_size * big.n_embd
    assert 1.25e9 < n < 1.35e9  # Table 7's 1.3B GPT-2
    from pysedd.config import SEDDConfig

    sedd = SEDDConfig.preset("large-1.45b").model
    assert big.n_head == sedd.n_heads == 32  # Table 7: both latency models have 32 heads (head dim 64)
    assert sedd.hidden_size // sedd.n_heads == big.n_embd // big.n_head == 64
    gpt2.save_pretrained(tmp_path / "m")
    loaded = load_ar_model(tmp_path / "m")
    assert isinstance(loaded, GPT2LMHeadModel) and not loaded.training
    with pytest.raises(UserError, match="cannot load a causal LM"):
        load_ar_model(tmp_path / "missing")


def test_ar_bad_input(gpt2):
    with pytest.raises(UserError, match="length must be a positive integer"):
        ar_sample(gpt2, 2, 0)
    with pytest.raises(UserError, match="exceeds the model's 64 positions"):
        ar_sample(gpt2, 2, 60, prompt_ids=[1] * 10)
    with pytest.raises(UserError, match="different lengths"):
        ar_sample(gpt2, 2, 4, prompt_ids=[[1, 2], [3]])
    with pytest.raises(UserError, match=r"\[0, 80\)"):
        ar_token_nll(gpt2, torch.tensor([[1, 80]]))


def test_full_context_sample_counts_its_start_token(gpt2):
    """64 tokens from a 64-position model: the start token takes position 0 and 63 tokens are generated after it
    (greedy, so the continuation must equal step-by-step argmax from the start token); 65 tokens do not fit."""
    out = ar_sample(gpt2, 2, 64, greedy=True)
    assert out.samples.shape == (2, 64) and (out.samples[:, 0] == EOS).all()
    assert torch.equal(out.samples[:, 1:], manual_greedy(gpt2, torch.full((2, 1), EOS), 63))
    assert out.nfe == 63
    stop = ar_sample(gpt2, 2, 64, greedy=True, stop_at_eos=True)
    assert (stop.lengths >= 1).all()  # the start token is not a generated EOS
    with pytest.raises(UserError, match="exceeds the model's 64 positions"):
        ar_sample(gpt2, 2, 65)


def test_temperature_reaches_generate(gpt2):
    """A low temperature concentrates the first token on the maximal logits (the fixture ties EOS with the top one);
    temperature 1 spreads it."""
    logits = gpt2(torch.tensor([[EOS]])).logits[0, -1]
    top = set((logits >= logits.max() - 1e-4).nonzero().flatten().tolist())
    cold = ar_sample(gpt2, 300, 1, temperature=0.05, seed=0).samples[:, 0]
    warm = ar_sample(gpt2, 300, 1, temperature=1.0, seed=0).samples[:, 0]
    assert set(cold.tolist()) <= top and len(set(warm.tolist())) > len(top) + 5
    with pytest.raises(UserError, match="temperature"):
        ar_sample(gpt2, 2, 3, temperature=0.0)

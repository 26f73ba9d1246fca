"""lm-eval integration, fully offline: local task YAMLs over converted data files, GPT-2 through lm-eval's hf model,
SEDD through the registered `sedd` model, both via lm-eval's own runner on a few documents."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from pysedd.errors import UserError
from pysedd.eval import harness, local_tasks
from pysedd.eval.common import derived_seed, load_model

LAMBADA_DOCS = [
    {"text": "She opened the door and saw her old friend standing there with a smile on his face"},
    {"text": "The train was late again so he decided to walk all the way to the office"},
    {"text": "They planted tomatoes in the garden and waited all summer for the first tomatoes"},
]
PIQA_DOCS = [
    {"goal": "How do I dry wet shoes?", "sol1": "Stuff them with newspaper.", "sol2": "Put them in the freezer.", "label": 0},
    {"goal": "How to cool soup quickly?", "sol1": "Heat it on the stove.", "sol2": "Stir it in an ice bath.", "label": 1},
    {"goal": "How to open a jar?", "sol1": "Run the lid under hot water.", "sol2": "Paint the lid blue.", "label": 0},
]


def write_jsonl(path, docs):
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("gpt2")
    GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=64, n_embd=32, n_layer=2, n_head=2)).save_pretrained(path)
    return load_model(str(path))


@pytest.fixture(scope="module")
def tiny_sedd(tmp_path_factory):
    from pysedd.config import SEDDConfig
    from pysedd.model import SEDD

    torch.manual_seed(0)
    config = SEDDConfig.preset("tiny", hidden_size=32, cond_dim=16, n_heads=2, length=64)
    model = SEDD(config)
    with torch.no_grad():  # non-zero output layer, so scores depend on the input
        model.output_layer.linear.weight.normal_(0, 0.5)
        model.output_layer.linear.bias.normal_(0, 0.5)
    path = tmp_path_factory.mktemp("sedd")
    model.save_pretrained(path)
    return load_model(str(path))


def test_gpt2_hf_through_lm_eval_on_local_tasks(tiny_gpt2, tmp_path):
    files = {"lambada_openai": str(write_jsonl(tmp_path / "lambada.jsonl", LAMBADA_DOCS)),
             "piqa": str(write_jsonl(tmp_path / "piqa.jsonl", PIQA_DOCS))}
    out = harness.run_lm_eval(tiny_gpt2, ["lambada_openai", "piqa"], data_files=files, cache_dir=str(tmp_path / "c"),
                              batch_size=4, limit=3)
    results = out["lm_eval"]["results"]
    assert set(results) == {"lambada_openai_local", "piqa_local"}
    metrics = harness.task_metrics(out["lm_eval"])
    assert 0.0 <= metrics["piqa"]["acc"] <= 1.0 and "acc_norm" in metrics["piqa"]
    assert metrics["lambada_openai"]["perplexity"] > 1.0
    assert out["tasks"]["piqa"]["n_docs"] == 3
    assert "LAMBADA acc" in harness.table([("gpt2", metrics)])


def test_sedd_through_lm_eval_matches_direct_nelbo(tiny_sedd, tmp_path):
    pytest.importorskip("pysedd.likelihood")
    from pysedd.likelihood import conditional_nelbo
    from pysedd.tokenizer import get_tokenizer

    files = {"lambada_openai": str(write_jsonl(tmp_path / "lambada.jsonl", LAMBADA_DOCS[:2])),
             "piqa": str(write_jsonl(tmp_path / "piqa.jsonl", PIQA_DOCS[:2]))}
    out = harness.run_lm_eval(tiny_sedd, ["lambada_openai", "piqa"], data_files=files, cache_dir=str(tmp_path / "c"),
                              n_samples=8, batch_size=8, limit=2)
    assert set(out["lm_eval"]["results"]) == {"lambada_openai_local", "piqa_local"}

    lm = harness.SEDDLM(tiny_sedd, n_samples=8, seed=3, batch_size=8)
    tok = get_tokenizer()
    context, choices = "How do I dry wet shoes?", [" Stuff them.", " Put them in the oven now."]

    class Request:  # what lm-eval passes: an object with .args
        def __init__(self, *args):
            self.args = args

    requests = [Request(context, c) for c in choices] + [Request("Other context", choices[0])]
    results = lm.loglikelihood(requests, disable_tqdm=True)
    for (ll, _), choice in zip(results, choices):  # without a doc_id, the choices of a question share their context's stream
        expected = conditional_nelbo(tiny_sedd.model, tiny_sedd.graph, tiny_sedd.noise, [[50256] + tok.encode(context)],
                                     [tok.encode(choice) + [50256]], n_samples=8, seed=3,
                                     keys=[derived_seed(3, context)], sampling_eps=1e-3, batch_size=8)[0]
        assert ll == pytest.approx(-expected)
    alone = lm.loglikelihood(requests[::-1], disable_tqdm=True)[::-1]
    assert alone == results  # order and batching do not change a number


def test_sedd_greedy_flag(tiny_sedd):
    """A model whose scores always prefer token 11 is greedy exactly for targets made of 11s."""
    from pysedd.config import SEDDConfig
    from pysedd.model import SEDD

    model = SEDD(SEDDConfig.from_dict(tiny_sedd.model.config.to_dict())).eval()
    with torch.no_grad():
        model.output_layer.linear.weight.zero_()
        model.output_layer.linear.bias.zero_()
        model.output_layer.linear.bias[11] = 50.0
    lm = harness.SEDDLM(dataclasses.replace(tiny_sedd, model=model), n_samples=2)  # the shared fixture stays as it is
    assert lm._is_greedy([50256, 5, 6], [11, 11, 50256])
    assert not lm._is_greedy([50256, 5, 6], [11, 12, 50256])


def test_sedd_generate_until_stops_at_the_stop_string(tiny_sedd):
    lm = harness.SEDDLM(tiny_sedd, gen_steps=4, seed=1)

    class Request:
        def __init__(self, *args):
            self.args = args

    context = "Once upon a time"
    full, again = lm.generate_until([Request(context, {"until": ["@@@"], "max_gen_toks": 12})] * 2, disable_tqdm=True)
    assert full == again and len(full) > 0  # seeded per request
    stop = full[len(full) // 2]
    (cut,) = lm.generate_until([Request(context, {"until": [stop], "max_gen_toks": 12})], disable_tqdm=True)
    assert cut == full.split(stop)[0]
    with pytest.raises(UserError, match="does not fit"):
        lm.generate_until([Request("x", {"max_gen_toks": 64})], disable_tqdm=True)


def test_sedd_lm_rejects_gpt2_and_long_targets(tiny_gpt2, tiny_sedd):
    with pytest.raises(UserError, match="needs a SEDD checkpoint"):
        harness.SEDDLM(tiny_gpt2)
    with pytest.raises(UserError, match="does not fit"):
        harness.SEDDLM(tiny_sedd)._fit([1, 2], list(range(64)))


def test_local_task_errors(tmp_path):
    with pytest.raises(UserError, match="unknown task"):
        local_tasks.local_task_yaml("mmlu", tmp_path / "x.jsonl", tmp_path)
    with pytest.raises(UserError, match="not found"):
        local_tasks.local_task_yaml("piqa", tmp_path / "missing.jsonl", tmp_path)
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(UserError, match="empty"):
        local_tasks.local_task_yaml("piqa", tmp_path / "empty.jsonl", tmp_path)
    (tmp_path / "blank.jsonl").write_text("\n\n")
    with pytest.raises(UserError, match="no documents"):
        local_tasks.local_task_yaml("lambada_openai", tmp_path / "blank.jsonl", tmp_path)
    write_jsonl(tmp_path / "nolabels.jsonl", [{"goal": "g", "sol1": "a", "sol2": "b"}])
    with pytest.raises(UserError, match="no 'label' field"):
        local_tasks.local_task_yaml("piqa", tmp_path / "nolabels.jsonl", tmp_path)


def test_offline_copies_convert_to_builtin_fields(shared_data, tmp_path):
    """The shared copies in other formats give the prompts lm-eval's built-ins would build from the originals."""
    from lm_eval.tasks.hellaswag.utils import process_docs
    from lm_eval.tasks.winogrande.preprocess_winogrande import doc_to_choice, doc_to_target
    import datasets

    hs = local_tasks.convert_hellaswag(shared_data / local_tasks.DEFAULT_FILES["hellaswag"])
    assert len(hs) == 10042
    doc = process_docs(datasets.Dataset.from_list(hs[:1]))[0]
    assert doc["query"] == "Roof shingle removal: A man is sitting on a roof. He"  # ctx_b re-capitalised
    assert doc["gold"] == 3 and doc["choices"][3] == "starts pulling up roofing on a roof."

    raw = [json.loads(line) for line in (shared_data / "winogrande/winogrande.jsonl").read_text().splitlines()]
    wg = local_tasks.convert_winogrande(shared_data / "winogrande/winogrande.jsonl")
    assert len(wg) == 1267
    for original, doc in zip(raw, wg):
        assert doc_to_choice(doc) == original["context_options"]
        assert doc_to_target(doc) == original["continuation"].strip()

    arc = local_tasks.convert_arc(shared_data / "arc/arc_challenge.jsonl")
    assert len(arc) == 1172 and arc[0]["choices"]["label"][0] == "A"
    assert arc[0]["question"].startswith("An astronomer observes")
    piqa = local_tasks.convert_piqa(shared_data / "piqa/valid.jsonl")
    assert len(piqa) == 1838 and piqa[1]["label"] == 1

    yaml_path, info = local_tasks.local_task_yaml("arc_challenge", shared_data / "arc/arc_challenge.jsonl", tmp_path)
    config = json.loads(yaml_path.read_text())
    assert config["include"].endswith("arc/arc_challenge.yaml") and config["test_split"] == "test"
    assert config["validation_split"] is None and info["n_docs"] == 1172


def test_lm_eval_cli_over_the_offline_copies(shared_data, tiny_gpt2, tmp_path, capsys):
    """`pysedd eval lm-eval --local-data` over the shared copies through lm-eval's runner, no hub. (HellaSwag's 10k
    documents are left out for time; its conversion is checked against lm-eval's own preprocessing above.)"""
    from pysedd.cli import main

    tasks = ["lambada_openai", "piqa", "arc_easy", "arc_challenge", "winogrande"]
    out = tmp_path / "lm.json"
    base = ["eval", "lm-eval", "--model", tiny_gpt2.source, "--local-data", str(shared_data), "--limit", "2",
            "--batch-size", "4", "--quiet", "--device", "cpu", "--out", str(out)]
    assert main(base + ["--tasks", *tasks, "--table", str(tmp_path / "lm.md")]) == 0
    result = json.loads(out.read_text())
    assert set(result["results"]) == {t + "_local" for t in tasks}  # lm-eval's own format
    assert set(result["pysedd"]["metrics"]) == set(tasks)
    assert result["pysedd"]["tasks"]["winogrande"]["n_docs"] == 1267
    assert "WinoGrande" in (tmp_path / "lm.md").read_text()
    assert list((tmp_path / "lm.json.shards").glob("requests-*/loglikelihood-*.json"))  # pysedd's JSON request cache
    assert main(base + ["--tasks", "mmlu"]) == 2
    assert "unknown task 'mmlu'" in capsys.readouterr().err


# -- common random numbers, batch size, EOS framing, the resume cache -------------------------------------------------

@pytest.fixture(scope="module")
def mixing_sedd(tmp_path_factory):
    """A tiny SEDD whose blocks are not the identity (every weight perturbed), so a target's score depends on its context."""
    from pysedd.config import SEDDConfig
    from pysedd.model import SEDD

    torch.manual_seed(0)
    model = SEDD(SEDDConfig.preset("tiny", hidden_size=32, cond_dim=16, n_heads=2, length=64))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("mixing-sedd")
    model.save_pretrained(path)
    return load_model(str(path))


def _instance(context, continuation, doc_id, task="winogrande"):
    from lm_eval.api.instance import Instance

    return Instance("loglikelihood", {}, (context, continuation), 0, (task, doc_id, 1))


def test_winogrande_shaped_options_share_their_random_numbers(mixing_sedd):
    """Two contexts, one continuation (WinoGrande's shape): the options of one document share t draws and target
    masks, so their difference barely moves across seeds, while options drawn independently (two documents) differ
    by more than either option's own MC spread."""
    contexts = ["The trophy did not fit in the suitcase because the trophy",
                "The trophy did not fit in the suitcase because the suitcase"]
    continuation = " was too big."
    spread = {}
    for name, docs in (("shared", (0, 0)), ("independent", (0, 1))):
        diffs, first = [], []
        for seed in range(5):
            lm = harness.SEDDLM(mixing_sedd, n_samples=8, seed=seed, batch_size=2, greedy=False, disable_tqdm=True)
            (a, _), (b, _) = lm.loglikelihood([_instance(c, continuation, d) for c, d in zip(contexts, docs)])
            diffs.append(a - b)
            first.append(a)
        spread[name] = (float(np.std(diffs)), float(np.std(first)))
    (shared, own), (independent, _) = spread["shared"], spread["independent"]
    assert own > 1.0  # the MC noise of one option is large on this model
    assert shared < 0.01 * own  # ... and cancels in the difference of one document's options
    assert independent > 0.5 * own


def test_batch_size_counts_requests_and_never_moves_a_number(mixing_sedd):
    """batch_size (lm-eval's) x mc_batch_size bounds the rows of a forward pass; results do not depend on either."""
    rows = []
    hook = mixing_sedd.model.register_forward_hook(lambda mod, args, out: rows.append(args[0].shape[0]))
    reqs = [_instance("Say it", " again.", 0, "piqa"), _instance("Say it", " later.", 0, "piqa"),
            _instance("Go on", " now.", 1, "piqa")]
    lengths = [len(harness.SEDDLM(mixing_sedd)._frame(*r.args)[1]) for r in reqs]
    assert lengths[0] == lengths[1]  # two requests of one length: they may share a forward pass
    try:
        results = {}
        for batch, mc in ((1, 4), (3, 4), (2, 8)):
            rows.clear()
            lm = harness.SEDDLM(mixing_sedd, n_samples=8, batch_size=batch, mc_batch_size=mc, greedy=False,
                                disable_tqdm=True)
            results[batch, mc] = lm.loglikelihood(reqs)
            assert max(rows) == min(batch * mc, 8 * 2)  # same-length requests share a forward pass
    finally:
        hook.remove()
    assert results[1, 4] == results[3, 4] == results[2, 8]


def test_batch_size_in_model_args_and_from_lm_eval(mixing_sedd, tmp_path):
    """`batch_size=` in --model_args beside lm-eval's own --batch_size: no duplicate keyword; model_args wins."""
    mixing_sedd.model.save_pretrained(tmp_path / "m")
    lm = harness.SEDDLM.create_from_arg_string(f"pretrained={tmp_path / 'm'},batch_size=3,n_samples=4",
                                               {"batch_size": 1, "max_batch_size": None, "device": "cpu"})
    assert lm.batch_size == 3 and lm.n_samples == 4
    lm = harness.SEDDLM.create_from_arg_string(f"pretrained={tmp_path / 'm'}", {"batch_size": 5, "device": "cpu"})
    assert lm.batch_size == 5
    lm = harness.SEDDLM.create_from_arg_obj({"pretrained": str(tmp_path / "m"), "batch_size": 2}, {"batch_size": 1})
    assert lm.batch_size == 2
    # lm-eval's own runner, as its CLI calls it: batch_size both in model_args and as its --batch_size
    import lm_eval
    from lm_eval.tasks import TaskManager

    yaml_path, _ = local_tasks.local_task_yaml("lambada_openai", write_jsonl(tmp_path / "l.jsonl", LAMBADA_DOCS[:1]),
                                               tmp_path / "tasks")
    out = lm_eval.simple_evaluate(model="sedd", model_args=f"pretrained={tmp_path / 'm'},batch_size=2,n_samples=2",
                                  batch_size=1, device="cpu", tasks=[str(yaml_path)], limit=1, bootstrap_iters=0,
                                  task_manager=TaskManager(include_defaults=False))
    assert "lambada_openai_local" in out["results"]
    with pytest.raises(UserError, match="batch_size must be a positive integer"):
        harness.SEDDLM(mixing_sedd, batch_size=0)
    with pytest.raises(UserError, match="eos_framing"):
        harness.SEDDLM(mixing_sedd, eos_framing="bos")


def test_eos_framing_none_scores_the_bare_ids(mixing_sedd):
    from pysedd.likelihood import conditional_nelbo
    from pysedd.tokenizer import get_tokenizer

    tok = get_tokenizer()
    req = _instance("A cat sat on the", " mat", 4, "lambada_openai")
    lm = harness.SEDDLM(mixing_sedd, n_samples=4, seed=1, eos_framing="none", disable_tqdm=True)
    ((ll, _),) = lm.loglikelihood([req])
    expected = conditional_nelbo(mixing_sedd.model, mixing_sedd.graph, mixing_sedd.noise, [tok.encode("A cat sat on the")],
                                 [tok.encode(" mat")], n_samples=4, seed=1,
                                 keys=[derived_seed(1, "doc", "lambada_openai", 4)])[0]
    assert ll == pytest.approx(-expected)
    both = harness.SEDDLM(mixing_sedd, n_samples=4, seed=1, disable_tqdm=True).loglikelihood([req])[0][0]
    assert both != ll


class _Payload:
    """Unpickling this creates a directory: the test fails if anything unpickles a planted cache file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return os.mkdir, (self.marker,)


def test_lm_eval_resume_cache_never_unpickles(tiny_gpt2, tmp_path):
    """A rerun reads only pysedd's JSON answers; pickle payloads planted in every cache file (and in the sqlite file
    lm-eval's own cache would open) never run, and the result is unchanged."""
    import pickle
    import sqlite3

    from pysedd.cli import main

    data = write_jsonl(tmp_path / "lambada.jsonl", LAMBADA_DOCS[:2])
    out = tmp_path / "lm.json"
    cmd = ["eval", "lm-eval", "--model", tiny_gpt2.source, "--tasks", "lambada_openai", "--task-file",
           f"lambada_openai={data}", "--quiet", "--device", "cpu", "--out", str(out)]
    assert main(cmd) == 0
    first = json.loads(out.read_text())["pysedd"]["metrics"]
    protocol = json.loads(out.read_text())["pysedd"]["protocol"]
    assert protocol["eos_framing"] == "none" and protocol["request_cache"].startswith("pysedd JSON")
    marker = tmp_path / "payload-ran"
    payload = pickle.dumps(_Payload(marker))
    (cache_dir,) = (tmp_path / "lm.json.shards").glob("requests-*")
    shards = list(cache_dir.glob("*.json"))
    assert shards
    for shard in shards[: len(shards) // 2 or 1]:  # half of them become pickles; the rest stay valid JSON
        shard.write_bytes(payload)
    db = sqlite3.connect(f"{cache_dir}_rank0.db")  # lm-eval's CachingLM layout: a sqlite table of pickled values
    db.execute("CREATE TABLE unnamed (key TEXT PRIMARY KEY, value BLOB)")
    db.execute("INSERT INTO unnamed VALUES (?, ?)", ("k", sqlite3.Binary(payload)))
    db.commit()
    db.close()
    assert main(cmd) == 0
    assert not marker.exists()
    assert json.loads(out.read_text())["pysedd"]["metrics"] == first

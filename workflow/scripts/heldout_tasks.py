"""Local lm-eval task data cut from held-out text, in the field layout of each built-in task
(docs/evaluation-protocol.md#lm-eval-tasks), so `pysedd eval lm-eval` can run the paper's tasks offline by
swapping only the data source.

Each item is built from one held-out document (a decoded validation block): the true continuation is the right
answer, continuations of other documents are the distractors. Deterministic given the seed.
"""
import json
import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # the repository's pysedd

from pysedd.data import PackedDataset  # noqa: E402
from pysedd.io import atomic_write_text  # noqa: E402
from pysedd.tokenizer import get_tokenizer  # noqa: E402

WORD = re.compile(r"^[A-Za-z]+$")


def documents(directory, tokenizer, count):
    """Up to `count` held-out documents as lists of whitespace-separated words (blocks decoded to text)."""
    data = PackedDataset(directory, "validation")
    docs = []
    for i in range(len(data)):
        words = tokenizer.decode(data[i].tolist()).replace("<|endoftext|>", " ").split()
        if len(words) >= 24:
            docs.append(words)
        if len(docs) == count:
            break
    if len(docs) < 4:
        raise SystemExit(f"only {len(docs)} held-out documents of 24+ words in {directory}; need at least 4")
    return docs


def split(words):
    """(context, continuation) halves of a document, at most 40 + 12 words."""
    cut = min(len(words) // 2, 40)
    return " ".join(words[:cut]), " ".join(words[cut : cut + 12])


def lambada(docs, rng):
    items = []
    for words in docs:
        words = words[:60]
        while words and not WORD.match(words[-1]):  # the target must be a plain word
            words = words[:-1]
        if len(words) > 8:
            items.append({"text": " ".join(words)})
    return items


def choices(docs, i, rng, n):
    """The true continuation of doc i and n-1 continuations of other docs, shuffled; returns (choices, gold)."""
    others = rng.sample([j for j in range(len(docs)) if j != i], n - 1)
    options = [split(docs[i])[1]] + [split(docs[j])[1] for j in others]
    order = list(range(n))
    rng.shuffle(order)
    return [options[k] for k in order], order.index(0)


def hellaswag(docs, rng):
    items = []
    for i, words in enumerate(docs):
        endings, gold = choices(docs, i, rng, 4)
        items.append({"activity_label": "Text", "ctx_a": split(words)[0], "ctx_b": "", "endings": endings,
                      "label": str(gold)})
    return items


def arc(docs, rng):
    items = []
    for i, words in enumerate(docs):
        texts, gold = choices(docs, i, rng, 4)
        labels = ["A", "B", "C", "D"]
        items.append({"id": f"heldout-{i}", "question": split(words)[0] + " ...",
                      "choices": {"text": texts, "label": labels}, "answerKey": labels[gold]})
    return items


def piqa(docs, rng):
    items = []
    for i, words in enumerate(docs):
        (sol1, sol2), gold = choices(docs, i, rng, 2)
        items.append({"goal": split(words)[0], "sol1": sol1, "sol2": sol2, "label": gold})
    return items


def winogrande(docs, rng):
    """A blank replaces one word of the context; the other option is a word from another document."""
    items = []
    for i, words in enumerate(docs):
        context = words[:40]
        positions = [k for k in range(len(context) // 2, len(context) - 1) if WORD.match(context[k])]
        other = [w for j in rng.sample(range(len(docs)), len(docs)) if j != i for w in docs[j] if WORD.match(w)]
        if not positions or not other:
            continue
        k = rng.choice(positions)
        wrong = next((w for w in other if w != context[k]), None)
        if wrong is None:
            continue
        options = [context[k], wrong]
        rng.shuffle(options)
        sentence = " ".join(context[:k] + ["_"] + context[k + 1 :])
        items.append({"sentence": sentence, "option1": options[0], "option2": options[1],
                      "answer": str(options.index(context[k]) + 1)})
    return items


BUILDERS = {"lambada_openai": lambada, "hellaswag": hellaswag, "arc_easy": arc, "arc_challenge": arc,
            "piqa": piqa, "winogrande": winogrande}

docs = documents(Path(snakemake.input.manifest).parent, get_tokenizer(snakemake.params.tokenizer),
                 snakemake.params.docs)
out = Path(snakemake.output[0])
out.mkdir(parents=True, exist_ok=True)
with open(snakemake.log[0], "w") as log:
    for task in snakemake.params.tasks:
        items = BUILDERS[task](docs, random.Random(f"{snakemake.params.seed}-{task}"))
        atomic_write_text(out / f"{task}.jsonl", "".join(json.dumps(item) + "\n" for item in items))
        print(f"{task}: {len(items)} items from {len(docs)} held-out documents", file=log)

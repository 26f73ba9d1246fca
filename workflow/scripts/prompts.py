"""MAUVE prompts with their human references: windows of prompt_len + gen_len tokens from held-out text (or from
the documents of a configured .jsonl/.txt file that are long enough), one {"text", "ids"} line each."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # the repository's pysedd

from pysedd.io import atomic_write_text  # noqa: E402
from pysedd.tokenizer import get_tokenizer  # noqa: E402

settings = snakemake.params.prompts
length, count = snakemake.params.length, settings["num_prompts"]
tokenizer = get_tokenizer(snakemake.params.tokenizer)
EOS = 50256


def heldout_windows():
    from pysedd.data import PackedDataset

    data = PackedDataset(Path(snakemake.input.manifest).parent, "validation")
    for i in range(len(data)):
        block = data[i].tolist()
        for start in range(0, len(block) - length + 1, length):
            window = block[start : start + length]
            if EOS not in window:  # a prompt and its reference come from one document
                yield window


def file_windows():
    path = Path(settings["path"])
    with open(path, encoding="utf-8") as f:
        for line in f:
            text = json.loads(line)[settings["field"]] if path.suffix == ".jsonl" else line.strip()
            ids = tokenizer.encode(text)
            if len(ids) >= length:
                yield ids[:length]


windows = []
for ids in heldout_windows() if settings["source"] == "heldout" else file_windows():
    windows.append(ids)
    if len(windows) == count:
        break
if len(windows) < count:
    raise SystemExit(f"mauve.prompts: only {len(windows)} documents of {length}+ tokens, {count} requested")
atomic_write_text(snakemake.output[0],
                  "".join(json.dumps({"text": tokenizer.decode(ids), "ids": ids}) + "\n" for ids in windows))
with open(snakemake.log[0], "w") as log:
    print(f"{len(windows)} prompts of {length} tokens", file=log)

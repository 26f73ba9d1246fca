"""Fetch everything a config needs from the network into the Hugging Face cache and resources/, then check that it
loads with the hub switched off: run it on a login node before submitting to compute nodes without internet.

    python workflow/scripts/prepare_offline.py config/paper.yaml            # fetch, then verify offline
    python workflow/scripts/prepare_offline.py config/paper.yaml --verify   # only verify (exit 1 naming what is missing)

What a config needs: hub models (`models.*.hub` that are hub ids), hub corpora (`data`, `zero_shot.datasets`, unless
local/heldout/demo), lm-eval's task datasets when `lm_eval.local_data: hub`, the MAUVE prompt file
(`mauve.prompts.path`; WebText's test set is downloaded from OpenAI's bucket) and every file a corpus spec names by
`path:` (`data`, `zero_shot.datasets`, `real_text`, `distill.data`) or an `lm_eval.local_data` directory: those have no
source to fetch from, so they are only checked and named when missing. Run from the directory you will run
Snakemake in (relative paths are resolved there); the HF cache is wherever HF_HOME points, as for the jobs.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
WEBTEXT_URL = "https://openaipublic.azureedge.net/gpt-2/output-dataset/v1/webtext.test.jsonl"
NOT_HUB = ("local", "heldout", "demo")


def load_config(path: str) -> dict:
    import yaml
    from snakemake.utils import validate

    config = yaml.safe_load(Path(path).read_text())
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))  # fills in the defaults
    return config


def needs(config: dict) -> dict[str, list]:
    models = [m["hub"] for m in config["models"].values()
              if "hub" in m and not (m["hub"].startswith(("/", ".", "~")) or m["hub"].count("/") > 1
                                     or os.path.isdir(m["hub"]))]
    specs = [config["data"]] if any("train" in m for m in config["models"].values()) else []
    specs += list(config["zero_shot"]["datasets"].values())
    corpora = sorted({(s["corpus"], s.get("hub_split", "train")) for s in specs
                      if s["corpus"] not in NOT_HUB and not s.get("path")})
    tasks = config["lm_eval"]["tasks"] if config["lm_eval"]["local_data"] == "hub" else []
    prompts = config["mauve"]["prompts"]
    files = [prompts["path"]] if prompts["source"] == "file" else []
    return {"models": sorted(set(models)), "corpora": corpora, "tasks": tasks, "files": files + local_files(config)}


def local_files(config: dict) -> list[str]:
    """Corpus files and directories the config names by path (they have no source to fetch from: they are checked)."""
    specs = [config["data"], *config["zero_shot"]["datasets"].values(), config.get("real_text"),
             (config.get("distill") or {}).get("data")]
    found = [p for spec in specs if isinstance(spec, dict) for p in spec.get("path", [])]
    if config["lm_eval"]["local_data"] not in ("hub", "heldout"):
        found.append(config["lm_eval"]["local_data"])
    return sorted(set(found))


def fetch(need: dict) -> None:
    from huggingface_hub import snapshot_download

    for path in need["files"]:
        if not os.path.exists(path):
            if "webtext" not in Path(path).name:
                sys.exit(f"prepare-offline: {path} is missing and has no known source: copy it there")
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            print(f"prepare-offline: downloading {WEBTEXT_URL} -> {path}", flush=True)
            urllib.request.urlretrieve(WEBTEXT_URL, path + ".part")
            os.replace(path + ".part", path)
    for repo_id in need["models"]:
        print(f"prepare-offline: model {repo_id}", flush=True)
        snapshot_download(repo_id)
    for name, split in need["corpora"]:
        print(f"prepare-offline: corpus {name} ({split})", flush=True)
        load_corpus(name, split)
    if need["tasks"]:
        print(f"prepare-offline: lm-eval tasks {', '.join(need['tasks'])}", flush=True)
        load_tasks(need["tasks"])


def load_corpus(name: str, split: str) -> None:
    from pysedd.data.corpora import hub_rows

    rows, _ = hub_rows(name, split)
    next(iter(rows), None)


def load_tasks(tasks: list[str]) -> None:
    from lm_eval.tasks import TaskManager, get_task_dict

    get_task_dict(tasks, TaskManager())


def verify(need: dict) -> list[str]:
    """What does not load with the hub off (this process must run with HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1)."""
    from huggingface_hub import snapshot_download

    missing = [f"file {p}" for p in need["files"] if not os.path.exists(p)]
    for repo_id in need["models"]:
        try:
            snapshot_download(repo_id, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - any failure means: not usable offline
            missing.append(f"model {repo_id} ({type(exc).__name__})")
    for name, split in need["corpora"]:
        try:
            load_corpus(name, split)
        except Exception as exc:  # noqa: BLE001
            missing.append(f"corpus {name}/{split} ({type(exc).__name__})")
    if need["tasks"]:
        try:
            load_tasks(need["tasks"])
        except Exception as exc:  # noqa: BLE001
            missing.append(f"lm-eval tasks {', '.join(need['tasks'])} ({type(exc).__name__})")
    return missing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("configfile")
    parser.add_argument("--verify", action="store_true", help="only check, with the hub switched off")
    args = parser.parse_args()
    need = needs(load_config(args.configfile))
    if not args.verify:
        fetch(need)
        env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        return subprocess.call([sys.executable, __file__, args.configfile, "--verify"], env=env)
    missing = verify(need)
    if missing:
        print("prepare-offline: not available offline: " + "; ".join(missing), file=sys.stderr)
        return 1
    print(f"prepare-offline: OK offline: {len(need['models'])} models, {len(need['corpora'])} corpora, "
          f"{len(need['tasks'])} lm-eval tasks, {len(need['files'])} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())

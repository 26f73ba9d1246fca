"""Corpora, detokenisers and packed token datasets (see corpora.py, detokenize.py, packing.py)."""
from pysedd.data.corpora import CORPORA, Corpus, demo_rows, file_rows, open_corpus
from pysedd.data.detokenize import detokenizer_for
from pysedd.data.packing import PackedDataset, pack_texts, pack_token_rows, prepare_corpus, read_manifest

__all__ = [
    "CORPORA", "Corpus", "PackedDataset", "demo_rows", "detokenizer_for", "file_rows", "open_corpus", "pack_texts",
    "pack_token_rows", "prepare_corpus", "read_manifest",
]

"""GPT-2 BPE built offline from the bundled OpenAI files: ids must equal the published GPT-2 ids."""
import pytest

from pysedd.errors import UserError
from pysedd.tokenizer import EOS_ID, VOCAB_SIZE, get_tokenizer

# ids from OpenAI's GPT-2 tokenizer (docs/evaluation-protocol.md#offline-data; "<|endoftext|>" is 50256)
KNOWN = {
    "Hello world": [15496, 995],
    " The quick brown fox jumps over the lazy dog.": [383, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13],
    "<|endoftext|>": [50256],
}


@pytest.fixture(scope="module")
def tok():
    return get_tokenizer()


def test_known_ids(tok):
    assert tok.vocab_size == VOCAB_SIZE == 50257 and tok.eos_id == EOS_ID == 50256
    for text, ids in KNOWN.items():
        assert tok.encode(text) == ids
    assert tok.encode_batch(list(KNOWN)) == list(KNOWN.values())


def test_decode_round_trip_bytes(tok):
    text = "naïve café — 東京 🙂\n\n  tabs\tand  spaces <|endoftext|> end"
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode_batch([tok.encode("a"), tok.encode(" b")]) == ["a", " b"]


def test_shared_copy_and_fingerprint(tok, shared_data):
    other = get_tokenizer(shared_data / "gpt2-tokenizer")
    assert other.fingerprint == tok.fingerprint
    assert other.fingerprint["vocab_sha256"].startswith("196139668b")
    assert other.fingerprint["merges_sha256"].startswith("1ce1664773")


def test_transformers_tokenizer_matches(tok, shared_data):
    hf = tok.as_transformers_tokenizer()
    assert hf.pad_token_id == hf.eos_token_id == 50256 and hf.model_max_length == 1024 and len(hf) == 50257
    text = (shared_data / "wikitext-2-raw" / "wiki.test.raw").read_text()[:20000]
    assert hf(text)["input_ids"] == tok.encode(text)
    assert hf.decode(tok.encode(text)) == text


def test_bad_tokenizer_source(tmp_path):
    with pytest.raises(UserError, match="neither encoder.json"):
        get_tokenizer(tmp_path)

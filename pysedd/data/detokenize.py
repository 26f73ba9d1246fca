"""Detokenisers that undo the tokenised spacing of evaluation corpora before GPT-2 BPE (SEDD ``data.py``).

Both the packed training data and the zero-shot perplexity evaluation apply them row by row, so the same text reaches
SEDD and GPT-2. Each detokeniser is an ordered list of rewrite rules; the order matters (it is the original's order).
``("s", a, b)`` is ``str.replace(a, b)``, ``("re", a, b)`` is ``re.sub(a, b)``.
"""
from __future__ import annotations

import re
from typing import Callable

from pysedd.errors import UserError

_WIKITEXT_RULES = [
    # contractions
    ("s", "s '", "s'"),
    ("re", r"/' [0-9]/", r"/'[0-9]/"),
    # number separators
    ("s", " @-@ ", "-"),
    ("s", " @,@ ", ","),
    ("s", " @.@ ", "."),
    # punctuation
    ("s", " : ", ": "),
    ("s", " ; ", "; "),
    ("s", " . ", ". "),
    ("s", " ! ", "! "),
    ("s", " ? ", "? "),
    ("s", " , ", ", "),
    # spacing inside brackets and quotes
    ("re", r"\(\s*([^\)]*?)\s*\)", r"(\1)"),
    ("re", r"\[\s*([^\]]*?)\s*\]", r"[\1]"),
    ("re", r"{\s*([^}]*?)\s*}", r"{\1}"),
    ("re", r"\"\s*([^\"]*?)\s*\"", r'"\1"'),
    ("re", r"'\s*([^']*?)\s*'", r"'\1'"),
    # section headers, degrees, line ends, numbers, possessives
    ("s", "= = = =", "===="),
    ("s", "= = =", "==="),
    ("s", "= =", "=="),
    ("s", " \N{DEGREE SIGN} ", "\N{DEGREE SIGN}"),
    ("s", " \n", "\n"),
    ("s", "\n ", "\n"),
    ("s", " N ", " 1 "),
    ("s", " 's", "'s"),
]

_PTB_RULES = [
    ("s", " 's", "'s"),
    ("s", "s ' ", "s' "),
    ("s", " n't", "n't"),
    ("s", " \n ", "\n"),
    ("s", "\\/", "/"),
    # " N N " needs more than one pass because matches overlap; the original runs ten passes
    *[("s", " N ", " 1 ")] * 10,
    ("s", "$ 1", "$1"),
    ("s", "# 1", "#1"),
    ("s", "<unk>", "?"),
]

_LM1B_RULES = [
    ("s", "http : / / ", "http://"),
    ("s", "https : / / ", "https://"),
    ("re", r" \'(\w+)", r"'\1"),
    ("re", r" (\w+) \. ", r" \1. "),
    ("re", r" (\w+) \.$", r" \1."),
    ("s", " ? ", "? "),
    ("re", r" \?$", "?"),
    ("s", " ! ", "! "),
    ("re", r" \!$", "!"),
    ("s", " , ", ", "),
    ("s", " : ", ": "),
    ("s", " ; ", "; "),
    ("s", " / ", "/"),
    ("re", r"\" ([^\"]+) \"", r'"\1"'),
    ("re", r"\' ([^\']+) \'", r"'\1'"),
    ("re", r"\( ([^\(\)]+) \)", r"(\1)"),
    ("re", r"\[ ([^\[\]]+) \]", r"[\1]"),
    ("s", "$ ", "$"),
    ("s", "\N{POUND SIGN} ", "\N{POUND SIGN}"),
]


def _compile(rules) -> list[tuple[str, object, str]]:
    return [(kind, re.compile(a) if kind == "re" else a, b) for kind, a, b in rules]


def _rule_detokenizer(rules) -> Callable[[str], str]:
    compiled = _compile(rules)

    def detokenize(text: str) -> str:
        for kind, pattern, replacement in compiled:
            text = pattern.sub(replacement, text) if kind == "re" else text.replace(pattern, replacement)
        return text

    return detokenize


wikitext_detokenizer = _rule_detokenizer(_WIKITEXT_RULES)
ptb_detokenizer = _rule_detokenizer(_PTB_RULES)
lm1b_detokenizer = _rule_detokenizer(_LM1B_RULES)


def lambada_detokenizer(text: str) -> str:
    """Curly double quotes → straight ones; the passage is prefixed with a newline (as SEDD scores it)."""
    text = text.replace("\N{LEFT DOUBLE QUOTATION MARK}", '"').replace("\N{RIGHT DOUBLE QUOTATION MARK}", '"')
    return "\n" + text.strip()


DETOKENIZERS: dict[str, Callable[[str], str]] = {
    "wikitext": wikitext_detokenizer,
    "ptb": ptb_detokenizer,
    "lm1b": lm1b_detokenizer,
    "lambada": lambada_detokenizer,
}


def detokenizer_for(name: str | None) -> Callable[[str], str] | None:
    """The detokeniser for a corpus name ('wikitext2', 'wikitext103', 'ptb', 'lm1b', 'lambada'); None for raw text
    corpora (openwebtext, demo, local files)."""
    if name is None or name in ("none", "openwebtext", "demo"):
        return None
    key = "wikitext" if name.startswith("wikitext") else name
    if key not in DETOKENIZERS:
        raise UserError(f"no detokenizer named {name!r}; known: {', '.join(sorted(DETOKENIZERS))} or 'none'")
    return DETOKENIZERS[key]

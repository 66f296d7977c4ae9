"""POST /classify: a classifier's label and probabilities for a text, or for a list of texts.

    python serve.py models/shakespeare_char.pt --classifier=models/who.pt
    curl -s localhost:8000/classify -d '{"text": "see you at the wall at 7?"}'
    -> {"label": "Ana Silva", "probabilities": {"Ana Silva": 0.91, "Bruno Costa": 0.09}, "model": "who"}
    curl -s localhost:8000/classify -d '{"texts": ["on my way", "which film"]}'
    -> {"results": [{"label": ..., "probabilities": {...}}, ...], "model": "who"}
"""
from __future__ import annotations

from pathlib import Path

from gptlib.errors import UserError
from serving.requests import RequestError, field

MAX_TEXTS = 64  # texts in one request: one batch of the classifier


def classify_answer(labeller, body: dict, max_chars: int) -> dict:
    """The answer to one request's body; a bad field, too much text or a text the model cannot
    read is a RequestError (400) saying which."""
    text, texts = field(body, "text", (str,)), field(body, "texts", (list,))
    if (text is None) == (texts is None):
        raise RequestError(400, 'send {"text": "..."} or {"texts": ["...", ...]} (one of the two)', param="text")
    given = [text] if text is not None else texts
    if not given or len(given) > MAX_TEXTS or not all(isinstance(t, str) for t in given):
        raise RequestError(400, f"texts must be a list of 1 to {MAX_TEXTS} strings", param="texts")
    if sum(map(len, given)) > max_chars:
        raise RequestError(400, f"the texts have {sum(map(len, given))} characters; the limit is {max_chars}", param="text")
    try:
        found = labeller.probabilities(given)
    except UserError as err:  # e.g. a text with no character the model knows
        raise RequestError(400, str(err), param="text") from None
    results = [{"label": max(p, key=p.get), "probabilities": p} for p in found]
    name = Path(labeller.path).stem
    return {**results[0], "model": name} if text is not None else {"results": results, "model": name}

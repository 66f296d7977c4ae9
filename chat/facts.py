"""Facts about the person, as question/answer pairs."""
from __future__ import annotations

from pathlib import Path

from gptlib.errors import UserError

from .files import decode, load_json
from .jsonl import pair_of
from .model import MALFORMED

_FACT_QUESTIONS = {
    "name": ("what is your name?", "what's your name?", "who are you?"),
    "hometown": ("where are you from?", "where is your hometown?"),
    "age": ("how old are you?",),
    "city": ("where do you live?",),
    "location": ("where do you live?",),
    "job": ("what do you do?", "what is your job?"),
    "occupation": ("what do you do?", "what is your occupation?"),
    "birthday": ("when is your birthday?",),
}


def fact_pairs(path: str) -> list[tuple[str, str]]:
    """{"name": "Ana", ...} as questions and answers, or a list of {"input", "output"} written by hand."""
    try:
        text, _ = decode(Path(path).read_bytes())
    except OSError as err:
        raise UserError(f"cannot read --facts={path}: {err.strerror or err}") from None
    data = load_json(text, path)
    if isinstance(data, dict):
        return [(question, _fact_answer(value)) for key, value in data.items() if value is not None
                for question in _FACT_QUESTIONS.get(key.strip().lower(), (f"what is your {key.strip().replace('_', ' ')}?",))]
    if isinstance(data, list):
        try:
            return [pair_of(record) for record in data]
        except MALFORMED:
            pass
    raise UserError(f'--facts={path}: expected an object like {{"name": "Ana", "hometown": "Porto"}} '
                    'or a list of {"input": ..., "output": ...}.')


def _fact_answer(value) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)

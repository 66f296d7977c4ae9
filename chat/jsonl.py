"""Hand-written JSONL (or a JSON list) of {"input", "output"} pairs."""
from __future__ import annotations

import json

from .model import MALFORMED, Imported
from .options import ChatDataConfig


def read_jsonl(text: str, name: str, config: ChatDataConfig) -> Imported:
    stripped = text.strip()
    if stripped.startswith("[") or (stripped.startswith("{") and "\n" not in stripped):
        try:
            return read_json_pairs(json.loads(stripped), name)  # a JSON list of pairs, or one pair
        except (ValueError, RecursionError):
            pass  # not one JSON value: read it line by line
    result = Imported("jsonl")
    for line in text.splitlines():
        if line.strip():
            try:
                result.pairs.append(pair_of(json.loads(line)))
            except MALFORMED:
                result.malformed += 1
    return result


def read_json_pairs(data, name: str) -> Imported:
    result = Imported("jsonl")
    for record in data if isinstance(data, list) else [data]:
        try:
            result.pairs.append(pair_of(record))
        except MALFORMED:
            result.malformed += 1
    return result


def pair_of(record) -> tuple[str, str]:
    if not isinstance(record["input"], str) or not isinstance(record["output"], str):
        raise TypeError("input and output must be strings")
    return record["input"], record["output"]

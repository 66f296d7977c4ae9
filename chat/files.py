"""Bytes to text, and text to JSON, with one-line errors."""
from __future__ import annotations

import json

from config import UserError


def decode(raw: bytes) -> tuple[str, int]:
    """The text and how many undecodable bytes were replaced (never an exception)."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16, as some spreadsheet tools save CSV
        try:
            return raw.decode("utf-16"), 0
        except UnicodeDecodeError:
            pass
    try:
        return raw.decode("utf-8-sig"), 0
    except UnicodeDecodeError:
        text = raw.decode("utf-8-sig", errors="replace")
        return text, text.count("\ufffd") - raw.count("\ufffd".encode())


def load_json(text: str, name: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{name}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); "
                        "is the export complete?") from None
    except RecursionError:
        raise UserError(f"{name}: JSON nested too deeply to be a chat export.") from None

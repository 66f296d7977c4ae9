"""Bytes to text, and text to JSON, with one-line errors."""
from __future__ import annotations

import json

from gptlib.errors import UserError


def decode(raw: bytes) -> tuple[str, int]:
    """The text and how many undecodable bytes were replaced (never an exception). UTF-8 first; UTF-16
    with or without a byte-order mark (some tools save CSV that way); Windows-1252 (older Windows tools)
    when not one byte sequence in the file is UTF-8 beyond ASCII."""
    utf16 = _utf16_codec(raw)
    if utf16:
        try:
            return raw.decode(utf16), 0
        except UnicodeDecodeError:
            pass
    try:
        return raw.decode("utf-8-sig"), 0
    except UnicodeDecodeError:
        text = raw.decode("utf-8-sig", errors="replace")
    if not any(ord(char) > 127 and char != "\ufffd" for char in text):
        return raw.decode("cp1252", errors="replace"), 0  # the five bytes cp1252 leaves undefined are rare
    return text, text.count("\ufffd") - raw.count("\ufffd".encode())


def _utf16_codec(raw: bytes) -> str | None:
    """"utf-16" (with a byte-order mark), "utf-16-le" or "utf-16-be" (without: told by where the zero
    bytes of ASCII characters fall), or None."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    sample = raw[:4000]
    if len(sample) < 4 or len(sample) % 2:
        return None
    odd, even = sample[1::2].count(0), sample[0::2].count(0)
    if odd > len(sample) / 4 and even == 0:
        return "utf-16-le"
    if even > len(sample) / 4 and odd == 0:
        return "utf-16-be"
    return None


def shape(line: str, show_text: bool = False) -> str:
    """A line as an error message may show it: its shape (letters as x or X, digits as 9,
    punctuation kept: "99/99/9999, 99:99 - Xxxx: xxxx") enough to see a header's layout without its
    words or numbers; its text only with --log_text=true."""
    line = line[:80]
    if not show_text:
        line = "".join("9" if c.isdigit() else ("X" if c.isupper() else "x") if c.isalpha() else c for c in line)
    return repr(line)


def load_json(text: str, name: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{name}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); "
                        "is the export complete?") from None
    except RecursionError:
        raise UserError(f"{name}: JSON nested too deeply to be a chat export.") from None

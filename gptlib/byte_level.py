"""GPT-2's byte-level alphabet, shared by our GPT-2 tokenizer and the hub tokenizers."""
from __future__ import annotations


def bytes_to_unicode() -> list[str]:
    """GPT-2's printable stand-in for each byte: printable Latin-1 bytes stand for themselves, the
    others (control characters, space...) for the characters from U+0100 on, in byte order. Its
    files are written in these stand-ins so that every token is a visible string."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = [""] * 256, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table

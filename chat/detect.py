"""Reading a file: bytes to text, the format recognised from the content, the importer for it."""
from __future__ import annotations

import json
from pathlib import Path

from gptlib.errors import UserError

from .csv_format import csv_cells, read_csv_columns
from .discord import read_discord_csv, read_discord_json
from .files import decode, load_json, shape
from .imessage import IMESSAGE_DATE, read_imessage_csv, read_imessage_text
from .jsonl import read_json_pairs, read_jsonl
from .meta import read_messenger
from .model import MALFORMED, Imported
from .options import KNOWN_FORMATS, ChatDataConfig
from .telegram import read_telegram
from .telegram_html import looks_like_telegram_html, read_telegram_html
from .whatsapp import looks_like_whatsapp, read_whatsapp, whatsapp_header

TEXT_READERS = {"whatsapp": read_whatsapp, "imessage-csv": read_imessage_csv, "imessage-text": read_imessage_text,
                "discord-csv": read_discord_csv, "csv": read_csv_columns, "jsonl": read_jsonl,
                "telegram-html": read_telegram_html}
JSON_READERS = {"telegram": read_telegram, "messenger": read_messenger, "instagram": read_messenger,
                "discord-json": read_discord_json, "jsonl": read_json_pairs}


def read_export(path: Path, config: ChatDataConfig) -> tuple[Imported, int]:
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror or err}") from None
    text, replaced = decode(raw)
    return parse_export(text, str(path), config), replaced


def parse_export(text: str, name: str, config: ChatDataConfig) -> Imported:
    """Recognise the format of `text` (unless --format names one) and read it with its importer."""
    fmt = config.format if config.format != "auto" else detect_format(text, name, config)
    try:
        if fmt in TEXT_READERS:
            return TEXT_READERS[fmt](text, name, config)
        data = load_json(text, name)
        if fmt == "json":
            fmt = detect_json_format(data, name)
        return JSON_READERS[fmt](data, name)
    except UserError:
        raise
    except MALFORMED as err:  # a safety net: records are wrapped one by one, so this should not happen
        raise UserError(f"{name}: could not be read as {fmt} ({type(err).__name__}: {err}).") from None


def detect_format(text: str, name: str, config: ChatDataConfig) -> str:
    lines = text.splitlines()
    first = next((line for line in lines if line.strip()), "")
    if any(whatsapp_header(line) for line in lines[:50]):
        return "whatsapp"
    if looks_like_telegram_html(text):
        return "telegram-html"
    if first.lstrip().startswith(("{", "[")) and not looks_like_whatsapp([first]):
        return "jsonl" if _is_pair_line(first) else "json"
    header = csv_cells(first)
    if {"Sent by Me", "Sender ID", "Message"} <= header:
        return "imessage-csv"
    if {"AuthorID", "Author", "Date", "Content"} <= header:
        return "discord-csv"
    if IMESSAGE_DATE.match(first.strip()):
        return "imessage-text"
    if config.columns:
        return "csv"
    if looks_like_whatsapp(lines):
        raise UserError(f"{name}: looks like a WhatsApp export, but no line's date and time could be read "
                        f"(its first line is shaped {shape(first, config.log_text)}); the header formats known are listed in the README.")
    hint = (" It looks like a CSV: say which column is what with --columns=sender=COL,text=COL,time=COL."
            if len(header) > 1 else "")
    raise UserError(f"{name}: not a chat export this tool knows ({KNOWN_FORMATS}). "
                    f"Its first line is shaped {shape(first, config.log_text)}.{hint}")


def detect_json_format(data, name: str) -> str:
    if isinstance(data, list) or (isinstance(data, dict) and "input" in data and "output" in data):
        return "jsonl"
    if isinstance(data, dict):
        if isinstance(data.get("chats"), dict):
            return "telegram"
        if "messages" in data and ("participants" in data or _looks_like_meta(data["messages"])):
            return "messenger"
        if "messages" in data and ("guild" in data or "channel" in data):
            return "discord-json"
        if "messages" in data:
            return "telegram"
        keys = ", ".join(map(repr, list(data)[:6]))
        raise UserError(f"{name}: JSON with keys {keys} is not a chat export this tool knows ({KNOWN_FORMATS}).")
    raise UserError(f"{name}: JSON holding a {type(data).__name__} is not a chat export "
                    f"this tool knows ({KNOWN_FORMATS}).")


def _is_pair_line(line: str) -> bool:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return False
    return isinstance(record, dict) and "input" in record


def _looks_like_meta(messages) -> bool:
    """Messenger and Instagram messages carry sender_name and timestamp_ms, even where the file has
    no "participants" (Telegram's carry "from" and "date")."""
    first = next((m for m in messages if isinstance(m, dict)), None) if isinstance(messages, list) else None
    return bool(first) and "sender_name" in first and "timestamp_ms" in first

"""Reading a file: bytes to text, the format recognised from the content, the importer for it."""
from __future__ import annotations

import json
import re
from pathlib import Path

from gptlib.errors import UserError

from .csv_format import csv_cells, read_csv_columns
from .discord import read_discord_csv, read_discord_json
from .files import decode, load_json, shape
from .google_chat import is_google_chat, is_group_info, is_user_info, read_google_chat
from .imessage import IMESSAGE_DATE, read_imessage_csv, read_imessage_text
from .jsonl import read_json_pairs, read_jsonl
from .kakao import looks_like_kakao, read_kakao, read_kakao_csv
from .line import looks_like_line, read_line
from .meta import read_messenger
from .model import MALFORMED, Imported
from .options import KNOWN_FORMATS, ChatDataConfig
from .signal import is_signal_record, looks_like_signal_markdown, read_signal_markdown, read_signal_records
from .signal_backup import is_signal_backup, read_signal_backup
from .skype import is_skype, read_skype
from .slack import is_slack_day, read_slack_day
from .snapchat import is_snapchat, read_snapchat
from .telegram import read_telegram
from .telegram_html import looks_like_telegram_html, read_telegram_html
from .whatsapp import looks_like_whatsapp, read_whatsapp, whatsapp_header

TEXT_READERS = {"whatsapp": read_whatsapp, "imessage-csv": read_imessage_csv, "imessage-text": read_imessage_text,
                "discord-csv": read_discord_csv, "csv": read_csv_columns, "jsonl": read_jsonl,
                "telegram-html": read_telegram_html, "line": read_line, "kakaotalk": read_kakao,
                "kakaotalk-csv": read_kakao_csv, "signal-markdown": read_signal_markdown}
JSON_READERS = {"telegram": read_telegram, "messenger": read_messenger, "instagram": read_messenger,
                "discord-json": read_discord_json, "jsonl": read_json_pairs, "signal-json": read_signal_records,
                "signal-backup": read_signal_backup,
                "slack": read_slack_day, "google-chat": read_google_chat, "snapchat": read_snapchat, "skype": read_skype}
_JSON_START = re.compile(r"\s*(?:\{|\[\s*(?:[{\[\"\]]|$))")  # "[LINE] Chat history" and "[12:30] Bob" are not JSON


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
        data, lines = json_value(text, name)
        if fmt == "json":
            fmt = detect_json_lines(data, name) if lines else detect_json_format(data, name)
        return JSON_READERS[fmt](data, name)
    except UserError:
        raise
    except MALFORMED as err:  # a safety net: records are wrapped one by one, so this should not happen
        raise UserError(f"{name}: could not be read as {fmt} ({type(err).__name__}: {err}).") from None


def detect_format(text: str, name: str, config: ChatDataConfig) -> str:
    lines = text.splitlines()
    first = next((line for line in lines if line.strip()), "").lstrip("\ufeff")
    if looks_like_line(lines):
        return "line"
    if looks_like_signal_markdown(lines):  # before WhatsApp: "[2024-01-04 21:41:00] Bruno: hi" fits both
        return "signal-markdown"
    if looks_like_kakao(lines):
        return "kakaotalk"
    if any(whatsapp_header(line) for line in lines[:50]):
        return "whatsapp"
    if looks_like_telegram_html(text):
        return "telegram-html"
    if _JSON_START.match(first) and not looks_like_whatsapp([first]):
        return "jsonl" if _is_pair_line(first) else "json"
    header = csv_cells(first)
    if {"Sent by Me", "Sender ID", "Message"} <= header:
        return "imessage-csv"
    if {"AuthorID", "Author", "Date", "Content"} <= header:
        return "discord-csv"
    if {"Date", "User", "Message"} <= header or {"날짜", "사용자", "메시지"} <= header:
        return "kakaotalk-csv"
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


def json_value(text: str, name: str):
    """The JSON value, or (JSON lines: one record a line, as signal-export's data.json) the list of records;
    and whether it came as lines. A line that is not JSON is left out and counted by the reader as None."""
    try:
        return json.loads(text), False
    except json.JSONDecodeError as err:
        if err.msg != "Extra data":
            return load_json(text, name), False  # raises the one-line error
    except RecursionError:
        return load_json(text, name), False
    records = []
    for line in text.splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except (ValueError, RecursionError):
                records.append(None)
    if not records or not isinstance(records[0], dict):
        return load_json(text, name), False
    return records, True


def detect_json_lines(records: list, name: str) -> str:
    first = records[0]
    if "input" in first and "output" in first:
        return "jsonl"
    if is_signal_record(first):
        return "signal-json"
    if is_signal_backup(first):
        return "signal-backup"
    keys = ", ".join(map(repr, list(first)[:6]))
    raise UserError(f"{name}: JSON lines (one record a line) with keys {keys} are not a chat export this tool knows "
                    f"({KNOWN_FORMATS}).")


def detect_json_format(data, name: str) -> str:
    if isinstance(data, list):
        if is_slack_day(data):
            return "slack"
        if data and is_signal_record(data[0]):
            return "signal-json"
        return "jsonl"
    if isinstance(data, dict) and "input" in data and "output" in data:
        return "jsonl"
    if isinstance(data, dict):
        if is_skype(data):
            return "skype"
        if is_google_chat(data):
            return "google-chat"
        if is_group_info(data) or is_user_info(data):
            raise UserError(f"{name}: Google Chat's list of members or spaces (group_info.json, user_info.json), "
                            "read with the messages.json beside it.")
        if is_snapchat(data):
            return "snapchat"
        if "backupTimeMs" in data:
            raise UserError(f"{name}: Signal's metadata.json; the messages are in main.jsonl beside it.")
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

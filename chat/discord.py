"""Discord (DiscordChatExporter): JSON and CSV."""
from __future__ import annotations

from pathlib import Path

from gptlib.errors import UserError

from .csv_format import csv_rows
from .model import (
    MALFORMED,
    MEDIA_PLACEHOLDER,
    Conversation,
    Imported,
    Message,
    clean_name,
)
from .options import ChatDataConfig
from .times import parse_time_text


def read_discord_json(data, name: str) -> Imported:
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
        raise UserError(f"{name}: not a Discord export (expected a \"messages\" list).")
    result = Imported("discord-json")
    channel = data.get("channel") if isinstance(data.get("channel"), dict) else {}
    guild = data.get("guild") if isinstance(data.get("guild"), dict) else {}
    group = str(channel.get("type", "DirectTextChat")) != "DirectTextChat"  # server channels are groups
    title = f"{guild.get('name', '')} #{channel.get('name', '')}".strip()
    conversation = Conversation(f"discord:{channel.get('id') or name}", title, [], group)
    result.add_records(conversation, data["messages"], _discord_message)
    result.conversations.append(conversation)
    return result


def _discord_message(record: dict) -> Message | None:
    if record.get("type", "Default") not in ("Default", "Reply"):
        return None  # joins, pins, calls
    author = record["author"]
    sender = clean_name(author.get("name") or author["id"])
    aliases = tuple(str(author[key]) for key in ("nickname", "id") if author.get(key))
    text = str(record.get("content") or "")
    if not text.strip() and (record.get("attachments") or record.get("stickers") or record.get("embeds")):
        text = MEDIA_PLACEHOLDER
    moment = parse_time_text(str(record["timestamp"]))
    if moment is None:
        raise ValueError(f"unreadable timestamp {record['timestamp']!r}")
    return Message(sender, text, moment, aliases)


def read_discord_csv(text: str, name: str, config: ChatDataConfig) -> Imported:
    result = Imported("discord-csv")
    messages = []
    _, rows = csv_rows(text, result)
    for row in rows:
        try:
            sender = clean_name(row["Author"])
            moment = parse_time_text(row["Date"])
            if not sender or moment is None:
                raise ValueError("no author or date")
            content = row["Content"] or (MEDIA_PLACEHOLDER if row.get("Attachments") else "")
            aliases = (sender.split("#")[0], row["AuthorID"])  # "bruno#1234" in older exports
            messages.append(Message(sender, content, moment, aliases))
        except MALFORMED:
            result.malformed += 1
    result.conversations.append(Conversation(f"discord-csv:{name}", Path(name).stem, messages))
    return result

"""Telegram Desktop: result.json of one chat, or of the whole account ({"chats": {"list": [...]}})."""
from __future__ import annotations

from datetime import datetime

from gptlib.errors import UserError

from .model import MEDIA_PLACEHOLDER, Conversation, Imported, Message, clean_name
from .times import from_epoch, naive_utc


def read_telegram(data, name: str) -> Imported:
    result = Imported("telegram")
    if isinstance(data, dict) and isinstance(data.get("chats"), dict):
        chats = list(data["chats"].get("list") or [])
        if isinstance(data.get("left_chats"), dict):
            chats += list(data["left_chats"].get("list") or [])
    elif isinstance(data, dict) and "messages" in data:
        chats = [data]
    else:
        raise UserError(f"{name}: not a Telegram export (expected \"messages\" or \"chats\").")
    for index, chat in enumerate(chats):
        if not isinstance(chat, dict) or not isinstance(chat.get("messages"), list):
            result.malformed += 1
            continue
        group = any(kind in str(chat.get("type", "")) for kind in ("group", "channel"))
        key = f"telegram:{chat['id']}" if "id" in chat else f"telegram:{name}#{index}"
        conversation = Conversation(key, str(chat.get("name") or ""), [], group)
        result.add_records(conversation, chat["messages"], _telegram_message)
        result.conversations.append(conversation)
    return result


def _telegram_message(record: dict) -> Message | None:
    if record.get("type", "message") != "message":
        return None  # "service": joins, pins, calls, title changes
    text = _telegram_text(record.get("text", ""))
    media = ("photo", "file", "media_type", "sticker_emoji", "poll", "location_information", "contact_information")
    if not text.strip() and any(key in record for key in media):
        text = MEDIA_PLACEHOLDER
    sender = clean_name(record.get("from") or "Deleted Account")
    aliases = (str(record["from_id"]),) if record.get("from_id") else ()
    if "date" in record:
        moment = naive_utc(datetime.fromisoformat(str(record["date"])))
    else:
        moment = from_epoch(float(record["date_unixtime"])) if "date_unixtime" in record else None
    return Message(sender, text, moment, aliases)


def _telegram_text(value) -> str:
    """Text is a string, or a list of strings and entities like {"type": "bold", "text": "..."}."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(part if isinstance(part, str) else str(part["text"]) for part in value)
    raise TypeError(f"text is {type(value).__name__}")

"""Facebook Messenger and Instagram: message_N.json, newest first, text as UTF-8 read as Latin-1."""
from __future__ import annotations

from gptlib.errors import UserError

from .model import MEDIA_PLACEHOLDER, Conversation, Imported, Message, clean_name
from .times import from_epoch


def fix_mojibake(text: str) -> str:
    """'cafÃ©' -> 'café': Facebook writes each UTF-8 byte as its own character."""
    try:
        return text.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return text


def read_messenger(data, name: str) -> Imported:
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
        raise UserError(f"{name}: not a Messenger/Instagram export (expected a \"messages\" list).")
    result = Imported("messenger")
    people = data.get("participants") if isinstance(data.get("participants"), list) else []
    names = sorted(fix_mojibake(str(p.get("name", ""))) for p in people if isinstance(p, dict))
    title = fix_mojibake(str(data.get("title") or ", ".join(names)))
    key = str(data.get("thread_path") or data.get("thread_id") or f"{title}|{'|'.join(names)}")
    conversation = Conversation(f"messenger:{key}", title, [], len(names) > 2)
    result.add_records(conversation, data["messages"], _messenger_message)
    result.conversations.append(conversation)
    return result


def _messenger_message(record: dict) -> Message | None:
    if record.get("type") in ("Call", "Subscribe", "Unsubscribe"):
        return None
    content = record.get("content")
    text = fix_mojibake(content) if isinstance(content, str) else ""
    media = ("photos", "videos", "audio_files", "gifs", "sticker", "files")
    if not text.strip() and any(key in record for key in media):
        text = MEDIA_PLACEHOLDER
    moment = from_epoch(int(record["timestamp_ms"]) / 1000)
    return Message(clean_name(fix_mojibake(str(record["sender_name"]))), text, moment)

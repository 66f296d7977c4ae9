"""Google Chat, from Google Takeout: Google Chat/Groups/DM xxx/messages.json, group_info.json beside it.

    {"messages": [{"creator": {"name": "Bruno Costa", "email": "...", "user_type": "Human"},
                   "created_date": "Thursday, January 4, 2024 at 9:41:05 PM UTC", "text": "...",
                   "attached_files": [...], "message_state": "DELETED", "topic_id": "..."}]}
    group_info.json: {"name": "Trip", "members": [{"name": ..., "email": ..., "user_type": "Human"}]}

A folder named "Space ..." or a group_info.json with a name or more than two members is a group.
"""
from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import PurePosixPath

from gptlib.errors import UserError

from .model import MEDIA_PLACEHOLDER, Conversation, Imported, Message, clean_name
from .times import naive_utc, parse_time_text

# "Thursday, January 4, 2024 at 9:41:05 PM UTC" (U+202F before PM in newer exports), or day first in
# other English locales: "Thursday, 4 January 2024 at 21:41:05 UTC".
_DATE = re.compile(r"(?:[A-Za-z]+, )?(.+?) at (\d{1,2}:\d{2}:\d{2}(?: ?[AP]M)?)(?: ([A-Z]{2,5}|[+-]\d{2}:?\d{2}))?")
_LAYOUTS = ("%B %d, %Y %I:%M:%S %p", "%d %B %Y %H:%M:%S", "%B %d, %Y %H:%M:%S", "%d %B %Y %I:%M:%S %p")


def is_google_chat(data) -> bool:
    messages = data.get("messages") if isinstance(data, dict) else None
    first = next((m for m in messages if isinstance(m, dict)), None) if isinstance(messages, list) else None
    return bool(first) and "creator" in first and "created_date" in first


def is_group_info(data) -> bool:
    return isinstance(data, dict) and isinstance(data.get("members"), list) and "messages" not in data


def is_user_info(data) -> bool:
    """Takeout's Google Chat/Users/User N/user_info.json: the account and its spaces, no messages."""
    return isinstance(data, dict) and "membership_info" in data and "messages" not in data


def read_google_chat(data, name: str) -> Imported:
    if not is_google_chat(data):
        raise UserError(f"{name}: not Google Chat's messages.json (expected \"messages\" with creator and created_date).")
    result = Imported("google-chat")
    folder = PurePosixPath(name.replace("\\", "/")).parent.name
    conversation = Conversation(f"google-chat:{folder or name}", folder.removeprefix("DM ").removeprefix("Space "), [],
                                folder.startswith("Space "))
    result.add_records(conversation, data["messages"], lambda record: _message(record, result.counts))
    result.conversations.append(conversation)
    untimed = sum(message.time is None for message in conversation.messages)
    if untimed:
        result.note = (f"{untimed} date(s) in a form not known here (Takeout writes them in the account's language); "
                       "those messages are kept in the file's order")
    return result


def with_group_info(imported: Imported, raw: bytes | None) -> None:
    """group_info.json beside messages.json names the space and its members."""
    try:
        info = json.loads(raw.decode("utf-8-sig")) if raw else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        return
    if not is_group_info(info):
        return
    members = [m for m in info["members"] if isinstance(m, dict)]
    for conversation in imported.conversations:
        conversation.marked_group = conversation.marked_group or bool(info.get("name")) or len(members) > 2
        conversation.title = str(info.get("name") or ", ".join(str(m.get("name", "")) for m in members))


def _message(record: dict, counts) -> Message | None:
    creator = record["creator"]
    if str(creator.get("user_type", "Human")) != "Human":
        counts["bot messages"] += 1
        return None
    if record.get("message_state") == "DELETED" or "deletion_metadata" in record:
        counts["deleted notices"] += 1
        return None
    try:
        moment = google_date(str(record["created_date"]))
    except ValueError:
        moment = None  # the words are still the person's; only the reply window cannot be checked
    text = str(record.get("text") or "")
    if record.get("attached_files") or record.get("annotations") and not text:
        counts["media placeholders (any language)"] += 1
        text = f"{text} {MEDIA_PLACEHOLDER}".strip()
    if record.get("quoted_message_metadata"):
        counts["quoted replies"] += 1
    if record.get("reactions"):
        counts["reactions"] += 1
    sender = clean_name(creator.get("name") or creator.get("email") or "")
    aliases = (str(creator["email"]),) if creator.get("email") else ()
    return Message(sender, text, moment, aliases) if sender else None


def google_date(value: str) -> datetime:
    match = _DATE.fullmatch(" ".join(value.replace("\u202f", " ").split()))
    if not match:
        moment = parse_time_text(value)
        if moment is None:
            raise ValueError("unreadable date")
        return moment
    when = f"{match.group(1)} {match.group(2)}"
    for layout in _LAYOUTS:
        try:
            moment = datetime.strptime(when, layout)
        except ValueError:
            continue
        zone = match.group(3) or "UTC"
        if zone[0] in "+-":
            moment = naive_utc(datetime.fromisoformat(moment.isoformat() + zone[:3] + ":" + zone[-2:]))
        return moment  # "UTC" or a zone's name: kept as written
    raise ValueError("unreadable date")

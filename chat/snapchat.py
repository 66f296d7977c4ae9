"""Snapchat, from "Download my data": json/chat_history.json, in its newer and older layouts.

    newer: {"bruno.costa": [{"From": "bruno.costa", "Media Type": "TEXT", "Created": "2024-01-04 21:41:05 UTC",
                             "Content": "...", "Conversation Title": null, "IsSender": false,
                             "Created(microseconds)": 1704404465000}]}
    older: {"Received Saved Chat History": [{"From": "bruno.costa", "Media Type": "TEXT", "Created": "...", "Text": "..."}],
            "Sent Saved Chat History": [{"To": "bruno.costa", ...}]}   (and "Received/Sent Chat History", no text)

Your own messages are from your user name (newer) or "Me" (older: they name only the recipient).
"""
from __future__ import annotations

import html

from gptlib.errors import UserError

from .model import MEDIA_PLACEHOLDER, Conversation, Imported, Message, clean_name
from .times import from_epoch, parse_time_text

_OLD_KEYS = ("Received Saved Chat History", "Sent Saved Chat History", "Received Chat History", "Sent Chat History")
_MEDIA = {"MEDIA", "SNAP", "STICKER", "NOTE", "SHARE", "LOCATION", "SHARESAVEDSTORY", "STORY_REPLY", "GIF"}


def is_snapchat(data) -> bool:
    if not isinstance(data, dict) or not data:
        return False
    if any(key in data for key in _OLD_KEYS):
        return True
    lists = [value for value in data.values() if isinstance(value, list)]
    first = next((r for value in lists for r in value if isinstance(r, dict)), None)
    return bool(first) and {"From", "Media Type", "Created"} <= set(first)


def read_snapchat(data: dict, name: str) -> Imported:
    if not isinstance(data, dict):
        raise UserError(f"{name}: not Snapchat's chat_history.json (expected an object of chats).")
    result = Imported("snapchat")
    conversations: dict[str, Conversation] = {}
    old = any(key in data for key in _OLD_KEYS)
    for key, records in data.items():
        for record in records if isinstance(records, list) else []:
            sent = key.startswith("Sent") if old else None
            title = str(record.get("Conversation Title") or "") if isinstance(record, dict) else ""
            other = key if not old else str(record.get("To" if sent else "From")) if isinstance(record, dict) else "?"
            chat = title or other  # a group chat is named by its title, a direct one by the other person
            conversation = conversations.setdefault(chat, Conversation(f"snapchat:{chat}", chat, [], bool(title)))
            result.add_records(conversation, [record], lambda r, sent=sent: _message(r, sent, result.counts))
    result.conversations += [c for c in conversations.values() if c.messages]
    return result


def _message(record: dict, sent: bool | None, counts) -> Message | None:
    kind = str(record.get("Media Type") or "TEXT").upper()
    if kind.startswith("STATUS"):
        counts["group events"] += 1  # "STATUSPARTICIPANTREMOVED", "STATUSERASEDMESSAGE", saved-to-camera-roll notes
        return None
    text = record.get("Content") if "Content" in record else record.get("Text")
    text = html.unescape(str(text)) if text else ""
    if kind in _MEDIA or (kind != "TEXT" and not text):
        counts["stickers" if kind == "STICKER" else "media placeholders (any language)"] += 1
        text = f"{text} {MEDIA_PLACEHOLDER}".strip() if kind != "STICKER" else MEDIA_PLACEHOLDER
    if "Created(microseconds)" in record:
        moment = from_epoch(float(record["Created(microseconds)"]))
    else:
        moment = parse_time_text(str(record["Created"]).removesuffix(" UTC"))
    if moment is None:
        raise ValueError("unreadable time")
    mine = record.get("IsSender") if sent is None else sent
    sender = "Me" if sent else clean_name(str(record.get("From") or ""))
    aliases = ("Me",) if mine else ()
    return Message(sender, text, moment, aliases) if sender else None

"""Skype: messages.json of the export (Skype > Settings > Export; a .tar holding messages.json and media).

    {"userId": "8:live:ana", "exportDate": "...", "conversations": [{"id": "8:live:bruno", "displayName": "Bruno Costa",
     "threadProperties": null, "MessageList": [{"id": "...", "displayName": "Bruno Costa", "from": "8:live:bruno",
     "originalarrivaltime": "2024-01-04T21:41:05.123Z", "messagetype": "RichText", "content": "Hi <b>there</b>",
     "properties": null}]}]}

Text is Skype's HTML-ish markup (<b>, <a href>, <ss type="smile">:)</ss>, <quote>, <e_m> edit marks,
&apos;); calls (Event/Call), member changes (ThreadActivity/*), polls, files and photos are the app's.
A conversation id starting "19:" is a group. Your messages are from the export's userId ("Me" too).
"""
from __future__ import annotations

import html
import re

from gptlib.errors import UserError

from .model import MEDIA_PLACEHOLDER, Conversation, Imported, Message, clean_name
from .times import parse_time_text

_TEXT = {"Text", "RichText", "RichText/HTML", "RichText/Sms"}
# Bounded, so that many unclosed tags in one huge message cannot make the search quadratic.
_QUOTE = re.compile(r"<quote\b.{0,20000}?</quote>", re.DOTALL | re.IGNORECASE)
_LEGACY_QUOTE = re.compile(r"<legacyquote>.{0,20000}?</legacyquote>", re.DOTALL | re.IGNORECASE)
_EDIT_MARK = re.compile(r"<e_m\b[^>]*>(?:</e_m>)?", re.IGNORECASE)
_TAG = re.compile(r"<[^<>]{0,2000}>")


def is_skype(data) -> bool:
    return isinstance(data, dict) and isinstance(data.get("conversations"), list) and "userId" in data


def read_skype(data: dict, name: str) -> Imported:
    if not is_skype(data):
        raise UserError(f"{name}: not Skype's messages.json (expected \"userId\" and \"conversations\").")
    result = Imported("skype")
    me = str(data.get("userId") or "")
    for index, chat in enumerate(data["conversations"]):
        if not isinstance(chat, dict) or not isinstance(chat.get("MessageList"), list):
            result.malformed += 1
            continue
        chat_id = str(chat.get("id") or f"{name}#{index}")
        title = str(chat.get("displayName") or chat_id.split(":", 1)[-1])
        conversation = Conversation(f"skype:{chat_id}", title, [], chat_id.startswith("19:"))
        result.add_records(conversation, chat["MessageList"], lambda record: _message(record, me, result.counts))
        result.conversations.append(conversation)
    return result


def _message(record: dict, me: str, counts) -> Message | None:
    kind = str(record.get("messagetype") or "")
    properties = record.get("properties") if isinstance(record.get("properties"), dict) else {}
    if kind == "Event/Call":
        counts["call records"] += 1
        return None
    if kind.startswith("ThreadActivity/") or kind in ("Notice", "PopCard", "Event/BingBot") or kind.startswith("Invite"):
        counts["group events"] += 1
        return None
    if kind == "Poll":
        counts["group notices"] += 1
        return None
    moment = parse_time_text(str(record["originalarrivaltime"]))
    if moment is None:
        raise ValueError("unreadable time")
    sender_id = str(record["from"])
    if properties.get("deletetime") or (kind in _TEXT and not str(record.get("content") or "").strip()):
        counts["deleted notices"] += 1
        return None
    if kind in _TEXT:
        text = skype_text(str(record.get("content") or ""), counts)
    else:
        counts["media placeholders (any language)"] += 1  # RichText/UriObject, Media_*, Contacts, Location...
        text = MEDIA_PLACEHOLDER
    short_id = sender_id.split(":", 1)[-1]
    sender = clean_name(record.get("displayName") or short_id)
    aliases = (sender_id, short_id) + (("Me",) if me and sender_id == me else ())
    return Message(sender or short_id, text, moment, aliases)


def skype_text(content: str, counts) -> str:
    """Skype's markup as the words typed: quotes of other messages and edit marks go, tags are unwrapped."""
    if _QUOTE.search(content):
        counts["quoted replies"] += 1
        content = _QUOTE.sub("", content)
    if _EDIT_MARK.search(content):
        counts["edit markers"] += 1
        content = _EDIT_MARK.sub("", content)
    content = _LEGACY_QUOTE.sub("", content)
    return html.unescape(_TAG.sub("", content)).strip()

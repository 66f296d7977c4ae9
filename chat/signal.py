"""Signal, as signal-export (sigexport) writes it: chat.md and data.json (JSON lines) in a folder per chat.

    [2024-01-04 21:41:00] Bruno Costa: Coming tonight?
    (blank line)
    [2024-01-04 21:43:00] Me:
    (blank line)
    > Coming tonight?           a quote of the message replied to
    (blank line)
    Yes!
    (- Bruno Costa: ❤️ -)       reactions
    (( 😀 ))                    a sticker (or [😀](../exported_stickers/...))
    ![IMG_1.jpg](./media/IMG_1.jpg)   attachments ([name](./media/...) for files)

Older versions wrote "[2024-01-04, 21:41]". data.json holds one record a line: date, sender, body,
quote, sticker, reactions, attachments (and deleted, call, missed in newer versions). You are "Me".
"""
from __future__ import annotations

import re
from pathlib import Path

from gptlib.errors import UserError

from .model import MEDIA_PLACEHOLDER, Conversation, Imported, Message, clean_name
from .options import ChatDataConfig
from .times import parse_time_text

HEADER = re.compile(r"\[(\d{4}-\d{2}-\d{2}),? (\d{2}:\d{2}(?::\d{2})?)\] ([^\n:]{1,80}?): ?(.*)")
_STICKER = re.compile(r"\n?\(\( .{0,40} \)\)|\[[^\[\]\n]{0,40}\]\(\.\./exported_stickers/[^()\n]*\)")
_ATTACHMENT = re.compile(r"!?\[[^\[\]\n]*\]\(\./media/[^()\n]*\)|\((?:media|attachment) not exported\)")
_DELETED = "(This message was deleted)"
# Calls as signal-export describes them: "Missed voice call", "Incoming video call (accepted, 2m 3s)".
_CALL = re.compile(r"(?:Incoming|Outgoing|Missed) (?:voice |video |group )?call(?: \([^()\n]{0,60}\))?")


def looks_like_signal_markdown(lines: list[str]) -> bool:
    """signal-export's chat.md: ISO dates in brackets and a blank line after every message. WhatsApp
    never writes year-first dates with dashes in brackets followed by blank lines like this."""
    headers = [i for i, line in enumerate(lines[:200]) if HEADER.fullmatch(line)]
    if not headers:
        return False
    spaced = sum(1 for i in headers if i + 1 < len(lines) and (not lines[i + 1].strip() or lines[i].endswith("  ")))
    return spaced >= max(1, len(headers) // 2)


def read_signal_markdown(text: str, name: str, config: ChatDataConfig) -> Imported:
    result = Imported("signal-markdown")
    entries: list[list] = []
    for line in text.lstrip("\ufeff").splitlines():
        match = HEADER.fullmatch(line)
        if match:
            entries.append([match.group(1), match.group(2), match.group(3), [match.group(4)]])
        elif entries:
            entries[-1][3].append(line)
        elif line.strip():
            result.malformed += 1
    messages = []
    for day, clock, sender, lines in entries:
        moment = parse_time_text(f"{day} {clock}")
        if moment is None:
            result.malformed += 1
            continue
        body = _markdown_body(lines, result.counts)
        if body is not None:
            messages.append(Message(clean_name(sender), body, moment, _me_alias(sender)))
    result.conversations.append(Conversation(f"signal:{_chat_name(name)}", _chat_name(name), messages))
    return result


def _markdown_body(lines: list[str], counts) -> str | None:
    """The message's own words: without the quote, reactions, sticker and attachment links."""
    kept, quoted = [], False
    for line in lines:
        if line.startswith("> ") or line == ">":
            quoted = True
            continue
        kept.append(line)
    if quoted:
        counts["quoted replies"] += 1
    return _own_words("\n".join(kept).strip(), counts)


def _own_words(body: str, counts) -> str | None:
    if body == _DELETED:
        counts["deleted notices"] += 1
        return None
    if _CALL.fullmatch(body):
        counts["call records"] += 1
        return None
    head, _, last = body.rpartition("\n")
    if last.startswith("(- ") and last.rstrip().endswith(" -)"):  # "(- Bruno: ❤️, Carla: 👍 -)", the last line
        counts["reactions"] += 1
        body = head
    if _STICKER.search(body):
        counts["stickers"] += 1
        body = _STICKER.sub(" " + MEDIA_PLACEHOLDER, body)
    if _ATTACHMENT.search(body):
        counts["media placeholders (any language)"] += 1
        body = _ATTACHMENT.sub(" " + MEDIA_PLACEHOLDER, body)
    return "\n".join(line.rstrip() for line in body.strip().splitlines())  # "  " ends each line in Markdown


def _me_alias(sender: str) -> tuple[str, ...]:
    return ("Me",) if sender.strip() == "Me" else ()


def _chat_name(name: str) -> str:
    """signal-export keeps each chat in a folder named after it: .../Bruno Costa/chat.md."""
    path = Path(name)
    return path.parent.name if path.stem in ("chat", "data") and path.parent.name else path.stem


def is_signal_record(record) -> bool:
    return isinstance(record, dict) and {"date", "sender", "body"} <= set(record)


def read_signal_records(records: list, name: str) -> Imported:
    """data.json: one message a line, as signal-export's Message.dict() writes it."""
    if not isinstance(records, list):
        raise UserError(f"{name}: not signal-export's data.json (expected one message record a line).")
    result = Imported("signal-json")
    conversation = Conversation(f"signal:{_chat_name(name)}", _chat_name(name), [])
    result.add_records(conversation, records, lambda record: _signal_record(record, result.counts))
    result.conversations.append(conversation)
    return result


def _signal_record(record: dict, counts) -> Message | None:
    moment = parse_time_text(str(record["date"]))
    if moment is None:
        raise ValueError("unreadable date")
    sender = clean_name(str(record["sender"]))
    if record.get("deleted"):
        counts["deleted notices"] += 1
        return None
    if record.get("call"):
        counts["call records"] += 1
        return None
    if record.get("quote"):
        counts["quoted replies"] += 1  # the quoted text is the other message's words, kept apart in "quote"
    if record.get("reactions"):
        counts["reactions"] += 1
    body = str(record.get("body") or "")
    if record.get("sticker"):
        counts["stickers"] += 1
        body = f"{body} {MEDIA_PLACEHOLDER}"
    if record.get("attachments"):
        counts["media placeholders (any language)"] += 1
        body = f"{body} {MEDIA_PLACEHOLDER}"
    text = _own_words(body.strip(), counts)
    return Message(sender, text, moment, _me_alias(sender)) if text is not None and sender else None


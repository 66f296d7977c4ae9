"""iMessage: the CSV (rows newest first) and the .txt of imessage-exporter."""
from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

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

IMESSAGE_DATE = re.compile(r"([A-Z][a-z]{2}) (\d{1,2}), (\d{4})\s+(\d{1,2}):(\d{2}):(\d{2})\s*([AP]M)\b")
# imessage-exporter's own lines: notes about a message, not its words.
_DELETED = "This message was deleted from the conversation!"
_REPLY_NOTICE = "This message responded to an earlier message."
_NOTE_LINES = {_REPLY_NOTICE} | {f"Sent with {effect}" for effect in (
    "Confetti", "Echo", "Fireworks", "Balloons", "Heart", "Lasers", "Shooting Star", "Sparkles", "Spotlight", "Slam",
    "Loud", "Gentle", "Invisible Ink")}
_UNSENT = re.compile(r"(?:You|They|Me|.{1,60}) (?:deleted|unsent) a message\.")
_APP_LINE = re.compile(r"^(?:Attachment missing!|(?:\w+ )?Sticker from .{1,60}: \S.*|Sticker from .{1,60} not found!)$")
_EVENT_LINE = re.compile(IMESSAGE_DATE.pattern + r"\s+(?!\()\S.*")
_MONTHS = {name: number for number, name in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1)}


def read_imessage_csv(text: str, name: str, config: ChatDataConfig) -> Imported:
    """Rows name the other person in Sender and Sender ID (theirs) or To (mine), as a name on some rows
    and a handle on others: a name and a handle seen on one row are one person, so a direct chat stays
    one conversation whatever mix the columns hold."""
    result = Imported("imessage-csv")
    rows, people = [], _People()
    _, records = csv_rows(text, result)
    for record in records:
        try:
            rows.append(_imessage_row(record))
        except MALFORMED:
            result.malformed += 1
            continue
        people.same(*rows[-1][0])
    conversations: dict[str, Conversation] = {}
    for spellings, group, message in rows:
        key = people.find(spellings[0])
        if key not in conversations:
            conversations[key] = Conversation(f"imessage:{key}", people.display(key), [], group)
        if not group and message.sender != "Me":  # one name for them, whichever column named them
            message.sender = people.display(key)
        conversations[key].messages.append(message)
    result.conversations.extend(conversations.values())
    return result


def _imessage_row(row: dict) -> tuple[list[str], bool, Message]:
    """Who the chat is with (every spelling this row gives), whether it is a group, and the message."""
    mine = _truthy(row["Sent by Me"])
    group = _truthy(row["Group Chat"])
    sender = "Me" if mine else clean_name(row["Sender"] or row["Sender ID"])
    if not sender:
        raise ValueError("no sender")
    aliases = tuple(clean_name(value) for value in (row["Sender"], row["Sender ID"], "Me" if mine else "") if value)
    to = row.get("To") or row.get("Contact Identifier") or ""  # the exporter's two versions name it differently
    if group:
        spellings = [row["Group Chat Name"] or to]
    else:
        spellings = [to] if mine else [row["Sender ID"], row["Sender"]]
    spellings = [clean_name(value) for value in spellings if clean_name(value)] or ["?"]
    moment = parse_time_text(row["Timestamp"]) or parse_time_text(row["Readable Time"])
    if moment is None:
        raise ValueError("no readable time")  # rows come newest first: without a time it cannot be placed
    return spellings, group, Message(sender, row["Message"], moment, aliases)


class _People:
    """Spellings of one person (a name, a phone number, an e-mail) joined whenever a row shows them together."""

    def __init__(self):
        self.parent: dict[str, str] = {}  # casefolded spelling -> another of the same person (a root: itself)
        self.spelled: dict[str, str] = {}  # casefolded -> as first written
        self.names: dict[str, str] = {}  # root -> the name to show (filled once every row is joined)

    def find(self, spelling: str) -> str:
        key = spelling.casefold()
        self.parent.setdefault(key, key)
        while self.parent[key] != key:
            self.parent[key] = self.parent[self.parent[key]]
            key = self.parent[key]
        return key

    def same(self, first: str, *others: str) -> None:
        for spelling in (first, *others):
            self.spelled.setdefault(spelling.casefold(), spelling)
            self.parent[self.find(spelling)] = self.find(first)

    def display(self, key: str) -> str:
        """A name rather than a handle where the person has one."""
        if not self.names:
            for spelling, written in self.spelled.items():
                root, shown = self.find(spelling), self.names.get(self.find(spelling))
                if shown is None or (_is_handle(shown), shown) > (_is_handle(written), written):
                    self.names[root] = written
        return self.names.get(key, key)


def _is_handle(spelling: str) -> bool:
    return "@" in spelling or sum(char.isdigit() for char in spelling) >= 5


def _truthy(value) -> bool:
    return str(value or "").strip().lower() in ("1", "true", "yes", "y")


def read_imessage_text(text: str, name: str, config: ChatDataConfig) -> Imported:
    """Blocks: a date line, a sender line ("Me" or a handle), the message lines; blank lines between."""
    result = Imported("imessage-text")
    blocks, previous_blank = [], True
    for line in text.splitlines():
        if previous_blank and IMESSAGE_DATE.match(line.strip()):
            blocks.append([line.strip()])
        elif blocks:
            blocks[-1].append(line)
        elif line.strip():
            result.malformed += 1
        previous_blank = not line.strip()
    messages = []
    for block in blocks:
        if not any(line.strip() for line in block[1:]) and _EVENT_LINE.match(block[0]):
            result.counts["group notices"] += 1  # "... Me renamed the conversation to Trip"
            continue
        try:
            message = _imessage_block(block, result.counts)
        except MALFORMED:
            result.malformed += 1
            continue
        if message:
            messages.append(message)
    result.conversations.append(Conversation(f"imessage-text:{name}", Path(name).stem, messages))
    return result


def _imessage_block(block: list[str], counts) -> Message | None:
    month, day, year, hour, minute, second, half = IMESSAGE_DATE.match(block[0]).groups()
    moment = datetime(int(year), _MONTHS[month], int(day), int(hour) % 12 + (12 if half == "PM" else 0),
                      int(minute), int(second))
    sender = clean_name(block[1])
    if not sender:
        raise ValueError("no sender line")
    body = block[2:]
    for marker in ("Tapbacks:", "Reactions:"):  # the reactions listed under a message are not its words
        if marker in body:
            body = body[:body.index(marker)]
    if _DELETED in body or any(_UNSENT.fullmatch(line.strip()) for line in body):
        counts["deleted notices"] += 1
        return None
    if _REPLY_NOTICE in body:
        counts["reply notices"] += 1
    body = [_APP_LINE.sub(MEDIA_PLACEHOLDER, line) for line in body if line.strip() not in _NOTE_LINES]
    return Message(sender, "\n".join(body).strip(), moment, ("Me",) if sender == "Me" else ())

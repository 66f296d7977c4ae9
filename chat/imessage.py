"""iMessage: the CSV (rows newest first) and the .txt of imessage-exporter."""
from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

from .csv_format import csv_rows
from .model import MALFORMED, Conversation, Imported, Message, clean_name
from .options import ChatDataConfig
from .times import parse_time_text


IMESSAGE_DATE = re.compile(r"([A-Z][a-z]{2}) (\d{1,2}), (\d{4})\s+(\d{1,2}):(\d{2}):(\d{2})\s*([AP]M)\b")
_MONTHS = {name: number for number, name in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1)}


def read_imessage_csv(text: str, name: str, config: ChatDataConfig) -> Imported:
    result = Imported("imessage-csv")
    conversations: dict[str, Conversation] = {}
    _, rows = csv_rows(text, result)
    for row in rows:
        try:
            other, group, message = _imessage_row(row)
        except MALFORMED:
            result.malformed += 1
            continue
        if other not in conversations:
            conversations[other] = Conversation(f"imessage:{other}", other, [], group)
        conversations[other].messages.append(message)
    result.conversations.extend(conversations.values())
    return result


def _imessage_row(row: dict) -> tuple[str, bool, Message]:
    mine = _truthy(row["Sent by Me"])
    group = _truthy(row["Group Chat"])
    sender = "Me" if mine else clean_name(row["Sender"] or row["Sender ID"])
    if not sender:
        raise ValueError("no sender")
    aliases = tuple(clean_name(value) for value in (row["Sender"], row["Sender ID"], "Me" if mine else "") if value)
    if group:
        other = row["Group Chat Name"] or row["To"]
    else:
        other = row["To"] if mine else (row["Sender ID"] or row["Sender"])
    moment = parse_time_text(row["Timestamp"]) or parse_time_text(row["Readable Time"])
    if moment is None:
        raise ValueError("no readable time")  # rows come newest first: without a time it cannot be placed
    return clean_name(other) or "?", group, Message(sender, row["Message"], moment, aliases)


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
        try:
            messages.append(_imessage_block(block))
        except MALFORMED:
            result.malformed += 1
    result.conversations.append(Conversation(f"imessage-text:{name}", Path(name).stem, messages))
    return result


def _imessage_block(block: list[str]) -> Message:
    month, day, year, hour, minute, second, half = IMESSAGE_DATE.match(block[0]).groups()
    moment = datetime(int(year), _MONTHS[month], int(day), int(hour) % 12 + (12 if half == "PM" else 0),
                      int(minute), int(second))
    sender = clean_name(block[1])
    if not sender:
        raise ValueError("no sender line")
    body = block[2:]
    if "Tapbacks:" in body:  # the reactions listed under a message are not its words
        body = body[:body.index("Tapbacks:")]
    return Message(sender, "\n".join(body).strip(), moment, ("Me",) if sender == "Me" else ())

"""WhatsApp: "12/31/23, 9:41 PM - Name: text" (Android) and "[31/12/2023, 21:41:05] Name: text" (iOS)."""
from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

from .model import INVISIBLE, MALFORMED, Conversation, Imported, Message, clean_name
from .options import ChatDataConfig


_WA_STAMP = (r"(\d{1,4})[./-](\d{1,2})[./-](\d{1,4}),?\s+"  # date: day, month and year in some order
             r"(\d{1,2})[:.](\d{2})(?:[:.](\d{2}))?(?:\s*([AaPp])\.?\s?[Mm]\.?)?")  # time, maybe "p. m."
_WA_ANDROID = re.compile(_WA_STAMP + r"\s*[-–]\s(.*)")
_WA_IOS = re.compile(r"\[" + _WA_STAMP + r"\]\s?(.*)")
# Sentences WhatsApp writes itself. On iOS they carry a sender (the chat's name) but start with U+200E.
_WA_NOTICE = re.compile(
    r"Messages and calls are end-to-end encrypted|Messages to this group are now secured|"
    r"Your security code with .+ changed|Missed (?:group )?(?:voice|video) call|.+ changed their phone number|"
    r".+ created group|You're now an admin|This chat is with a business account|.+ turned (?:on|off) disappearing")
_WA_EVENT = re.compile(r"\b(?:added|removed|left|joined|changed|created|deleted this group|pinned|turned on|turned off)\b")


def whatsapp_header(line: str):
    line = line.replace("\u202f", " ").replace("\xa0", " ").lstrip("\u200e\u200f\ufeff")
    return _WA_IOS.match(line) or _WA_ANDROID.match(line)


def read_whatsapp(text: str, name: str, config: ChatDataConfig) -> Imported:
    result = Imported("whatsapp")
    entries = []  # (stamp groups, rest of the header line, continuation lines)
    for line in text.splitlines():
        match = whatsapp_header(line)
        if match:
            entries.append((match.groups()[:7], match.group(8), []))
        elif entries:
            entries[-1][2].append(line)  # a multi-line message goes on
        elif line.strip():
            result.malformed += 1  # text before the first message
    order = date_order([stamp[:3] for stamp, _, _ in entries], any(stamp[6] for stamp, _, _ in entries))
    messages = []
    for stamp, rest, more in entries:
        try:
            moment = _whatsapp_time(stamp, order)
        except MALFORMED:
            result.malformed += 1
            continue
        split = _whatsapp_sender(rest)
        if split:  # None: a system line, nobody's words
            messages.append(Message(split[0], "\n".join([split[1], *more]).strip(), moment))
    result.conversations.append(Conversation(f"whatsapp:{name}", Path(name).stem, messages))
    return result


def _whatsapp_sender(rest: str) -> tuple[str, str] | None:
    sender, sep, body = rest.partition(": ")
    if not sep or any(quote in sender for quote in '"“”') or len(sender) > 80:
        return None
    marked = body.startswith("\u200e")
    body = INVISIBLE.sub("", body)
    if _WA_NOTICE.match(body) or (marked and _WA_EVENT.search(body)):
        return None
    sender = clean_name(sender)
    return (sender, body) if sender else None


def date_order(triples: list[tuple[str, str, str]], twelve_hour: bool) -> str:
    """"ymd", "dmy" or "mdy" for a whole file, from the values seen: 31/12 is day-first, 12/31 month-first."""
    if any(len(first) == 4 for first, _, _ in triples):
        return "ymd"
    if any(int(first) > 12 for first, _, _ in triples):
        return "dmy"
    if any(int(second) > 12 for _, second, _ in triples):
        return "mdy"
    # Every number fits both ways: take the order under which the dates run forward more often.
    backward = {order: _backward_steps(triples, order) for order in ("dmy", "mdy")}
    if backward["dmy"] != backward["mdy"]:
        return min(backward, key=backward.get)
    return "mdy" if twelve_hour else "dmy"  # AM/PM clocks are mostly American


def _backward_steps(triples, order: str) -> int:
    days = [_ymd(triple, order) for triple in triples]
    return sum(later < earlier for earlier, later in zip(days, days[1:]))


def _ymd(triple, order: str) -> tuple[int, int, int]:
    a, b, c = map(int, triple)
    year, month, day = {"ymd": (a, b, c), "dmy": (c, b, a), "mdy": (c, a, b)}[order]
    return (year + 2000 if year < 100 else year), month, day


def _whatsapp_time(stamp, order: str) -> datetime:
    year, month, day = _ymd(stamp[:3], order)
    hour, minute, second, half = int(stamp[3]), int(stamp[4]), int(stamp[5] or 0), stamp[6]
    if half:
        hour = hour % 12 + (12 if half.lower() == "p" else 0)
    return datetime(year, month, day, hour, minute, second)

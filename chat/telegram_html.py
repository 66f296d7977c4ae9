"""Telegram Desktop's HTML export (its default): messages.html, messages2.html, ... one chat a folder.

A message is <div class="message default clearfix"> with a from_name, a date whose title holds the time,
and a text; a follow-up by the same person is "joined" and has no from_name; "message service" divs are
dates and events. Read with the standard library's html.parser, not a regex over HTML."""
from __future__ import annotations

import re
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path

from .model import (
    MALFORMED,
    MEDIA_PLACEHOLDER,
    Conversation,
    Imported,
    Message,
    clean_name,
)
from .options import ChatDataConfig

JOINED = "\x00joined"  # a follow-up whose sender is the previous message's, possibly in the previous file


def looks_like_telegram_html(text: str) -> bool:
    head = text[:20000]
    return "<html" in head.lower() and 'class="message' in head and ('class="history"' in head or "page_wrap" in head)


def read_telegram_html(text: str, name: str, config: ChatDataConfig) -> Imported:
    result = Imported("telegram-html")
    parser = _Page()
    try:
        parser.feed(text)
        parser.close()
    except MALFORMED:
        result.malformed += 1
    messages = []
    for record in parser.records:
        if "service" in record["classes"]:
            result.counts["service lines"] += 1
            continue
        try:
            message = _message(record)
        except MALFORMED:
            result.malformed += 1
            continue
        if message.sender == JOINED and messages:
            message.sender = messages[-1].sender
        messages.append(message)
    folder = Path(name).parent  # messages.html and messages2.html of one folder are one chat
    result.conversations.append(Conversation(f"telegram-html:{folder}", parser.title or folder.name, messages))
    return result


def _message(record: dict) -> Message:
    sender = clean_name(record["from"]) if record["from"] is not None else ""
    if not sender:
        if "joined" not in record["classes"]:
            raise ValueError("a message without a sender")
        sender = JOINED
    moment = datetime.strptime(record["date"].split(" UTC")[0].strip(), "%d.%m.%Y %H:%M:%S")  # local time, as in result.json
    text = re.sub(r" *\n *", "\n", re.sub(r"[ \t]+", " ", "".join(record["text"]))).strip()
    if not text and record["media"]:
        text = MEDIA_PLACEHOLDER
    return Message(sender, text, moment)


class _Page(HTMLParser):
    """Collects one record per message div: its classes, sender, date, text, and whether it has media."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.records: list[dict] = []
        self.title = ""
        self.stack: list[str] = []  # what each open div or span is: "message", "from", "text", "skip", ""

    def handle_starttag(self, tag, attrs):
        if tag == "br":
            self._data("\n")
        if tag not in ("div", "span"):
            return
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        self.stack.append(self._role(classes, attributes))

    def _role(self, classes: list[str], attributes: dict) -> str:
        if "message" in classes and ("default" in classes or "service" in classes):
            self.records.append({"classes": classes, "from": None, "date": "", "text": [], "media": False})
            return "message"
        if not self.records or "message" not in self.stack:
            return "title" if classes == ["text", "bold"] and not self.records else ""
        record = self.records[-1]
        if "forwarded" in classes:
            return "forwarded"
        if "date" in classes and attributes.get("title") and "forwarded" not in self.stack:
            record["date"] = attributes["title"]
        if "from_name" in classes and "forwarded" not in self.stack and record["from"] is None:
            record["from"] = ""
            return "from"
        if "media_wrap" in classes:
            record["media"] = True
        if "text" in classes and "reply_to" not in classes:
            return "text"
        if {"details", "reply_to", "reactions", "userpic_wrap"} & set(classes):
            return "skip"
        return ""

    def handle_endtag(self, tag):
        if tag in ("div", "span") and self.stack:
            self.stack.pop()

    def handle_data(self, data):
        self._data(data)

    def _data(self, data: str) -> None:
        if "skip" in self.stack:
            return
        role = next((role for role in reversed(self.stack) if role in ("from", "text", "title")), None)
        if role == "title":
            self.title += data.strip()
        elif role and self.records:
            if role == "from":
                self.records[-1]["from"] += data
            else:  # line breaks are <br>; the source's own newlines are layout
                self.records[-1]["text"].append(data if data == "\n" else data.replace("\n", " "))

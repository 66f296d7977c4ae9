"""What every importer produces: messages, conversations, and what one file held."""
from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

MEDIA_PLACEHOLDER = "<Media omitted>"  # what importers write for a message that is only a photo, file...
# A record that breaks one of these while being read is malformed: counted, skipped, never fatal.
MALFORMED = (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError, OSError,
             RecursionError, csv.Error)
# The apps' own texts that importers recognise, each counted in the report (lines recognised).
APP_TEXT_RULES = ("system lines (no sender)", "marked as the app's own (U+200E)", "media placeholders (any language)",
                  "attached-file lines", "deleted notices", "edit markers", "encryption notices", "group events",
                  "call records", "group notices", "reply notices", "service lines", "stickers", "reactions",
                  "quoted replies", "bot messages")
# \x01 \x02 \x03 are the trainer's markers, so no control character may reach the output; neither may
# the invisible bidi marks iOS inserts, nor lone surrogates (from JSON escapes) that cannot be written.
INVISIBLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff\ud800-\udfff]")


@dataclass
class Message:
    sender: str  # as the export spells it; consecutive messages of one sender make one turn
    text: str
    time: datetime | None  # naive; None where the export gives no time
    aliases: tuple[str, ...] = ()  # other spellings --me may use: user name, id, "Me"


@dataclass
class Conversation:
    key: str  # one chat split over files (Messenger's message_1.json, message_2.json) shares a key
    title: str
    messages: list[Message]
    marked_group: bool = False  # the export itself says it is a group or a server channel
    keyed: bool = False  # merged with others by key only: a Slack thread repeats its channel's message, yet is its own

    def speakers(self) -> Counter:
        return Counter(message.sender for message in self.messages)

    def is_group(self) -> bool:
        return self.marked_group or len(self.speakers()) > 2


@dataclass
class Imported:
    format: str
    conversations: list[Conversation] = field(default_factory=list)
    pairs: list[tuple[str, str]] = field(default_factory=list)  # ready-made pairs (JSONL)
    malformed: int = 0  # lines or records that could not be read and were skipped
    counts: Counter = field(default_factory=Counter)  # the app's own texts recognised, by rule
    note: str = ""  # something the user may want to know about how the file was read

    def add_records(self, conversation: Conversation, records, read_record) -> None:
        """Each JSON record read into a message of `conversation`: a malformed one is counted and
        skipped, never fatal; one that holds no message (a service line) gives None and is dropped."""
        for record in records:
            try:
                message = read_record(record)
            except MALFORMED:
                self.malformed += 1
                continue
            if message:
                conversation.messages.append(message)


def clean_name(name: str) -> str:
    # WhatsApp writes "~ Name" for people not in the address book and wraps phone numbers in bidi marks.
    return INVISIBLE.sub("", str(name)).strip().lstrip("~").strip()


def me_matcher(me: str):
    """A test for "this message is mine": any spelling in --me (comma-separated) against the sender
    and its aliases, ignoring case. Several spellings let one run read WhatsApp and iMessage ("Me")."""
    wanted = {name.strip().casefold() for name in me.split(",") if name.strip()}

    def is_me(message: Message) -> bool:
        return any(name and name.strip().casefold() in wanted for name in (message.sender, *message.aliases))
    return is_me

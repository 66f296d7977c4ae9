"""The options of chat_data.py: one dataclass whose comments become --help."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from gptlib.errors import UserError

FORMATS = ("whatsapp", "telegram", "telegram-html", "messenger", "instagram", "imessage-csv", "imessage-text",
           "discord-json", "discord-csv", "line", "kakaotalk", "kakaotalk-csv", "signal-markdown", "signal-json", "signal-backup",
           "slack", "google-chat", "snapchat", "skype", "csv", "jsonl")
KNOWN_FORMATS = ("WhatsApp .txt or .zip (Android or iOS), Telegram result.json or messages.html, Messenger/Instagram message_N.json, "
                 "iMessage CSV or imessage-exporter .txt, Discord JSON or CSV, LINE .txt, KakaoTalk .txt or .csv, "
                 "Signal (its own export's main.jsonl, or signal-export's chat.md or data.json), Slack export .zip or folder, Google Chat messages.json, "
                 "Snapchat chat_history.json, Skype messages.json or .tar, CSV with --columns, JSONL of input/output pairs")


@dataclass
class ChatDataConfig:
    me: str = ""  # your name as the exports spell it (display name, user name, or "Me"); any case; several: "Ana Silva,Me"
    out: str = "data/chat/pairs.jsonl"  # where the pairs go, one JSON object a line (written atomically)
    reply_window: float = 30.0  # minutes from their last message to my first that still make a reply
    silence_hours: float = 3.0  # this long without a word ends a turn: a message weeks later is not part of the last reply
    session_gap_hours: float = 6.0  # this long without a word ends a conversation: a reply's context (its "context" in the output) is the earlier turns of its session only
    exclude_contacts: str = ""  # leave these people out entirely, comma-separated names or ids as the export spells them: every chat they speak in is dropped (the report counts the messages)
    group_chats: bool = False  # also learn from group chats (more than two people speaking)
    since: str = ""  # keep only messages on or after this date, YYYY-MM-DD; empty keeps all
    top_contacts: int = 0  # keep only the N conversations with the most messages; 0 keeps all
    lowercase: bool = False  # lowercase all text: fewer distinct characters for a small model
    drop_media: bool = True  # remove the apps' own texts: <Media omitted>, "image omitted", deleted messages, call records, group notices
    replace_links: bool = True  # replace http(s):// and www. links with the word "link"
    squeeze_repeats: bool = True  # cut a character (not a digit) repeated more than 3 times to 3 ("oooooh" -> "oooh")
    drop_reactions: bool = True  # drop reactions and tapbacks ('Loved "..."', "reacted 😂 to your message")
    drop_emoji: bool = False  # remove emoji (many rare characters for a character-level model)
    scrub_private: bool = True  # replace e-mails, phone numbers, card numbers, IBANs, national IDs, IP addresses and passwords after "password:" with <email>, <phone>, <card>, <iban>, <id>, <ip>, <password>
    region: str = ""  # the country of most of your contacts' numbers (PT, US, JP ...): their national forms are read by phonenumbers; +CC forms are found for every country
    redact: str = ""  # terms to replace with <redacted> too, comma-separated: a street, a Wi-Fi password, a friend's name (--redact="Rua das Flores,hunter2")
    redact_file: str = ""  # a file of terms to redact, one a line; re:PATTERN for a regular expression, # for a comment
    redact_drop: bool = False  # drop a message holding a redacted term, instead of replacing the term with <redacted>
    facts: str = ""  # facts.json about you ({"name": "Ana", "hometown": "Porto"}) made into Q/A pairs
    facts_repeat: int = 10  # each fact pair is written this many times so that a small model learns it
    columns: str = ""  # for any other CSV, which column is what: sender=Author,text=Content,time=Date
    date_order: str = "auto"  # WhatsApp dates where day and month could be either way: auto (from the file), dmy, mdy or ymd
    log_text: bool = False  # show text from the exports in error messages (off: a line's shape only, letters as x and digits as 9)
    format: str = "auto"  # auto (from the content) or whatsapp, telegram, messenger, line, kakaotalk, signal-json, skype, csv...
    senders: bool = False  # write {"text", "label"} rows instead of pairs: every message, its sender the label ("who wrote this?" for gpt_final_version.py --task=classify); --out defaults to data/chat/senders.jsonl

    def validate(self) -> None:
        if self.reply_window < 0:
            raise UserError(f"reply_window must not be negative, got {self.reply_window}.")
        if self.silence_hours <= 0:
            raise UserError(f"silence_hours must be positive, got {self.silence_hours}.")
        if self.session_gap_hours <= 0:
            raise UserError(f"session_gap_hours must be positive (6 splits chats after six silent hours), got {self.session_gap_hours}.")
        if self.top_contacts < 0:
            raise UserError(f"top_contacts must not be negative, got {self.top_contacts}.")
        if self.facts_repeat < 1:
            raise UserError(f"facts_repeat must be at least 1, got {self.facts_repeat}.")
        if self.format != "auto" and self.format not in FORMATS:
            raise UserError(f"--format={self.format!r} is not one of auto, {', '.join(FORMATS)}.")
        if self.date_order not in ("auto", "dmy", "mdy", "ymd"):
            raise UserError(f"--date_order={self.date_order!r} is not one of auto, dmy, mdy, ymd.")
        self.since_date()
        if self.columns or self.format == "csv":
            self.column_map()

    def since_date(self) -> date | None:
        if not self.since:
            return None
        try:
            return date.fromisoformat(self.since)
        except ValueError:
            raise UserError(f"--since={self.since!r} is not a date; write it as YYYY-MM-DD, e.g. --since=2023-01-31.") from None

    def column_map(self) -> dict[str, str]:
        """--columns=sender=Author,text=Content,time=Date as {"sender": "Author", ...}."""
        known = ("sender", "text", "time", "conversation")
        mapping = {}
        for part in filter(None, self.columns.split(",")):
            key, sep, column = part.partition("=")
            if not sep or key.strip() not in known or not column.strip():
                raise UserError(f"--columns: {part!r} should be KEY=COLUMN with KEY one of {', '.join(known)}, "
                                "as in --columns=sender=Author,text=Content,time=Date")
            mapping[key.strip()] = column.strip()
        missing = [key for key in ("sender", "text") if key not in mapping]
        if missing:
            raise UserError(f"--columns must name the {' and '.join(missing)} column, "
                            "as in --columns=sender=Author,text=Content,time=Date")
        return mapping

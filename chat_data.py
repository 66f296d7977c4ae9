"""Turn exported chats into {"input", "output"} training pairs: what someone wrote, and how I replied.

    python chat_data.py WhatsApp.txt result.json --me="Ana Silva" --out=data/chat/pairs.jsonl
    python chat_data.py inbox/ --me="Ana Silva" --since=2022-01-01 --top_contacts=10
    python chat_data.py export.csv --me=ana --columns=sender=Author,text=Content,time=Date
    python chat_data.py --help        # every option with its default

Formats are recognised from the content, not the file name: WhatsApp (Android and iOS .txt),
Telegram Desktop result.json (one chat or the whole account), Facebook Messenger / Instagram
message_N.json, iMessage (CSV, or the .txt of imessage-exporter), Discord (DiscordChatExporter JSON
or CSV), any other CSV through --columns, and JSONL of {"input", "output"} pairs written by hand.
A folder is read file by file. Everything happens on this machine: nothing is sent anywhere.

Sections: options · messages and conversations · reading a file · one importer per app · times ·
cleaning · pairs · facts · report and command line.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

from atomic_write import atomic_write
from config import UserError, apply, help_text, parse_args, run_cli

USAGE = 'usage: python chat_data.py EXPORT... --me="Your Name" [--out=data/chat/pairs.jsonl] [--name=value ...]'
FORMATS = ("whatsapp", "telegram", "messenger", "instagram", "imessage-csv", "imessage-text",
           "discord-json", "discord-csv", "csv", "jsonl")
KNOWN_FORMATS = ("WhatsApp .txt (Android or iOS), Telegram result.json, Messenger/Instagram message_N.json, "
                 "iMessage CSV or imessage-exporter .txt, Discord JSON or CSV, CSV with --columns, "
                 "JSONL of input/output pairs")
MEDIA_PLACEHOLDER = "<Media omitted>"  # what importers write for a message that is only a photo, file...
# A record that breaks one of these while being read is malformed: counted, skipped, never fatal.
MALFORMED = (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError, OSError,
             RecursionError, csv.Error)


# ----------------------------------------------------------------------------------------------
# Options


@dataclass
class ChatDataConfig:
    me: str = ""  # your name as the exports spell it (display name, user name, or "Me"); any case; several: "Ana Silva,Me"
    out: str = "data/chat/pairs.jsonl"  # where the pairs go, one JSON object a line (written atomically)
    reply_window: float = 30.0  # minutes from their last message to my first that still make a reply
    group_chats: bool = False  # also learn from group chats (more than two people speaking)
    since: str = ""  # keep only messages on or after this date, YYYY-MM-DD; empty keeps all
    top_contacts: int = 0  # keep only the N conversations with the most messages; 0 keeps all
    lowercase: bool = False  # lowercase all text: fewer distinct characters for a small model
    drop_media: bool = True  # remove placeholders such as <Media omitted>, "image omitted", deleted messages
    replace_links: bool = True  # replace http(s):// and www. links with the word "link"
    squeeze_repeats: bool = True  # cut a character (not a digit) repeated more than 3 times to 3 ("oooooh" -> "oooh")
    drop_reactions: bool = True  # drop reactions and tapbacks ('Loved "..."', "reacted 😂 to your message")
    drop_emoji: bool = False  # remove emoji (many rare characters for a character-level model)
    scrub_private: bool = True  # replace e-mail addresses with "email" and phone numbers with "phone"
    facts: str = ""  # facts.json about you ({"name": "Ana", "hometown": "Porto"}) made into Q/A pairs
    facts_repeat: int = 10  # each fact pair is written this many times so that a small model learns it
    columns: str = ""  # for any other CSV, which column is what: sender=Author,text=Content,time=Date
    format: str = "auto"  # auto (from the content) or whatsapp, telegram, messenger, discord-json, csv...

    def validate(self) -> None:
        if self.reply_window < 0:
            raise UserError(f"reply_window must not be negative, got {self.reply_window}.")
        if self.top_contacts < 0:
            raise UserError(f"top_contacts must not be negative, got {self.top_contacts}.")
        if self.facts_repeat < 1:
            raise UserError(f"facts_repeat must be at least 1, got {self.facts_repeat}.")
        if self.format != "auto" and self.format not in FORMATS:
            raise UserError(f"--format={self.format!r} is not one of auto, {', '.join(FORMATS)}.")
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


# ----------------------------------------------------------------------------------------------
# Messages and conversations: what every importer produces


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


def clean_name(name: str) -> str:
    # WhatsApp writes "~ Name" for people not in the address book and wraps phone numbers in bidi marks.
    return _INVISIBLE.sub("", str(name)).strip().lstrip("~").strip()


def me_matcher(me: str):
    """A test for "this message is mine": any spelling in --me (comma-separated) against the sender
    and its aliases, ignoring case. Several spellings let one run read WhatsApp and iMessage ("Me")."""
    wanted = {name.strip().casefold() for name in me.split(",") if name.strip()}

    def is_me(message: Message) -> bool:
        return any(name and name.strip().casefold() in wanted for name in (message.sender, *message.aliases))
    return is_me


# ----------------------------------------------------------------------------------------------
# Reading a file: bytes to text, the format, the importer


def decode(raw: bytes) -> tuple[str, int]:
    """The text and how many undecodable bytes were replaced (never an exception)."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16, as some spreadsheet tools save CSV
        try:
            return raw.decode("utf-16"), 0
        except UnicodeDecodeError:
            pass
    try:
        return raw.decode("utf-8-sig"), 0
    except UnicodeDecodeError:
        text = raw.decode("utf-8-sig", errors="replace")
        return text, text.count("\ufffd") - raw.count("\ufffd".encode())


def read_export(path: Path, config: ChatDataConfig) -> tuple[Imported, int]:
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror or err}") from None
    text, replaced = decode(raw)
    return parse_export(text, str(path), config), replaced


def parse_export(text: str, name: str, config: ChatDataConfig) -> Imported:
    """Recognise the format of `text` (unless --format names one) and read it with its importer."""
    fmt = config.format if config.format != "auto" else detect_format(text, name, config)
    try:
        if fmt in TEXT_READERS:
            return TEXT_READERS[fmt](text, name, config)
        data = load_json(text, name)
        if fmt == "json":
            fmt = detect_json_format(data, name)
        return JSON_READERS[fmt](data, name)
    except UserError:
        raise
    except MALFORMED as err:  # a safety net: records are wrapped one by one, so this should not happen
        raise UserError(f"{name}: could not be read as {fmt} ({type(err).__name__}: {err}).") from None


def detect_format(text: str, name: str, config: ChatDataConfig) -> str:
    lines = text.splitlines()
    first = next((line for line in lines if line.strip()), "")
    if any(_whatsapp_header(line) for line in lines[:50]):
        return "whatsapp"
    if first.lstrip().startswith(("{", "[")):
        return "jsonl" if _is_pair_line(first) else "json"
    header = _csv_cells(first)
    if {"Sent by Me", "Sender ID", "Message"} <= header:
        return "imessage-csv"
    if {"AuthorID", "Author", "Date", "Content"} <= header:
        return "discord-csv"
    if _IMESSAGE_DATE.match(first.strip()):
        return "imessage-text"
    if config.columns:
        return "csv"
    hint = (" It looks like a CSV: say which column is what with --columns=sender=COL,text=COL,time=COL."
            if len(header) > 1 else "")
    raise UserError(f"{name}: not a chat export this tool knows ({KNOWN_FORMATS}). "
                    f"Its first line is {first[:80]!r}.{hint}")


def detect_json_format(data, name: str) -> str:
    if isinstance(data, list) or (isinstance(data, dict) and "input" in data and "output" in data):
        return "jsonl"
    if isinstance(data, dict):
        if isinstance(data.get("chats"), dict):
            return "telegram"
        if "messages" in data and "participants" in data:
            return "messenger"
        if "messages" in data and ("guild" in data or "channel" in data):
            return "discord-json"
        if "messages" in data:
            return "telegram"
        keys = ", ".join(map(repr, list(data)[:6]))
        raise UserError(f"{name}: JSON with keys {keys} is not a chat export this tool knows ({KNOWN_FORMATS}).")
    raise UserError(f"{name}: JSON holding {type(data).__name__} {str(data)[:40]!r} is not a chat export "
                    f"this tool knows ({KNOWN_FORMATS}).")


def load_json(text: str, name: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{name}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); "
                        "is the export complete?") from None
    except RecursionError:
        raise UserError(f"{name}: JSON nested too deeply to be a chat export.") from None


def _is_pair_line(line: str) -> bool:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return False
    return isinstance(record, dict) and "input" in record


def _csv_cells(line: str) -> set[str]:
    try:
        return {cell.strip() for cell in next(csv.reader([line]), [])}
    except csv.Error:
        return set()


def _csv_rows(text: str, result: Imported):
    """The header, and a generator of rows as dicts; a row that cannot be parsed is counted in `result`."""
    first = text.split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=first.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = [cell.strip() for cell in next(reader, [])]
    except csv.Error:
        header = []

    def rows():
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error:
                result.malformed += 1
                continue
            if not any(cell.strip() for cell in row):
                continue
            if len(row) > len(header) and any(cell.strip() for cell in row[len(header):]):
                result.malformed += 1  # more cells than columns: a broken quote, most likely
                continue
            yield dict(zip(header, row + [""] * (len(header) - len(row))))
    return header, rows()


# ----------------------------------------------------------------------------------------------
# WhatsApp: "12/31/23, 9:41 PM - Name: text" (Android) and "[31/12/2023, 21:41:05] Name: text" (iOS)

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


def _whatsapp_header(line: str):
    line = line.replace("\u202f", " ").replace("\xa0", " ").lstrip("\u200e\u200f\ufeff")
    return _WA_IOS.match(line) or _WA_ANDROID.match(line)


def read_whatsapp(text: str, name: str, config: ChatDataConfig) -> Imported:
    result = Imported("whatsapp")
    entries = []  # (stamp groups, rest of the header line, continuation lines)
    for line in text.splitlines():
        match = _whatsapp_header(line)
        if match:
            entries.append((match.groups()[:7], match.group(8), []))
        elif entries:
            entries[-1][2].append(line)  # a multi-line message goes on
        elif line.strip():
            result.malformed += 1  # text before the first message
    order = _date_order([stamp[:3] for stamp, _, _ in entries], any(stamp[6] for stamp, _, _ in entries))
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
    body = _INVISIBLE.sub("", body)
    if _WA_NOTICE.match(body) or (marked and _WA_EVENT.search(body)):
        return None
    sender = clean_name(sender)
    return (sender, body) if sender else None


def _date_order(triples: list[tuple[str, str, str]], twelve_hour: bool) -> str:
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


# ----------------------------------------------------------------------------------------------
# Telegram Desktop: result.json of one chat, or of the whole account ({"chats": {"list": [...]}})


def read_telegram(data, name: str) -> Imported:
    result = Imported("telegram")
    if isinstance(data, dict) and isinstance(data.get("chats"), dict):
        chats = list(data["chats"].get("list") or [])
        if isinstance(data.get("left_chats"), dict):
            chats += list(data["left_chats"].get("list") or [])
    elif isinstance(data, dict) and "messages" in data:
        chats = [data]
    else:
        raise UserError(f"{name}: not a Telegram export (expected \"messages\" or \"chats\").")
    for index, chat in enumerate(chats):
        if not isinstance(chat, dict) or not isinstance(chat.get("messages"), list):
            result.malformed += 1
            continue
        group = any(kind in str(chat.get("type", "")) for kind in ("group", "channel"))
        key = f"telegram:{chat['id']}" if "id" in chat else f"telegram:{name}#{index}"
        conversation = Conversation(key, str(chat.get("name") or ""), [], group)
        for record in chat["messages"]:
            try:
                message = _telegram_message(record)
            except MALFORMED:
                result.malformed += 1
                continue
            if message:
                conversation.messages.append(message)
        result.conversations.append(conversation)
    return result


def _telegram_message(record: dict) -> Message | None:
    if record.get("type", "message") != "message":
        return None  # "service": joins, pins, calls, title changes
    text = _telegram_text(record.get("text", ""))
    media = ("photo", "file", "media_type", "sticker_emoji", "poll", "location_information", "contact_information")
    if not text.strip() and any(key in record for key in media):
        text = MEDIA_PLACEHOLDER
    sender = clean_name(record.get("from") or "Deleted Account")
    aliases = (str(record["from_id"]),) if record.get("from_id") else ()
    if "date" in record:
        moment = _naive_utc(datetime.fromisoformat(str(record["date"])))
    else:
        moment = _from_epoch(float(record["date_unixtime"])) if "date_unixtime" in record else None
    return Message(sender, text, moment, aliases)


def _telegram_text(value) -> str:
    """Text is a string, or a list of strings and entities like {"type": "bold", "text": "..."}."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(part if isinstance(part, str) else str(part["text"]) for part in value)
    raise TypeError(f"text is {type(value).__name__}")


# ----------------------------------------------------------------------------------------------
# Facebook Messenger and Instagram: message_N.json, newest first, text as UTF-8 read as Latin-1


def fix_mojibake(text: str) -> str:
    """'cafÃ©' -> 'café': Facebook writes each UTF-8 byte as its own character."""
    try:
        return text.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return text


def read_messenger(data, name: str) -> Imported:
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
        raise UserError(f"{name}: not a Messenger/Instagram export (expected a \"messages\" list).")
    result = Imported("messenger")
    people = data.get("participants") if isinstance(data.get("participants"), list) else []
    names = sorted(fix_mojibake(str(p.get("name", ""))) for p in people if isinstance(p, dict))
    title = fix_mojibake(str(data.get("title") or ", ".join(names)))
    key = str(data.get("thread_path") or data.get("thread_id") or f"{title}|{'|'.join(names)}")
    conversation = Conversation(f"messenger:{key}", title, [], len(names) > 2)
    for record in data["messages"]:
        try:
            message = _messenger_message(record)
        except MALFORMED:
            result.malformed += 1
            continue
        if message:
            conversation.messages.append(message)
    result.conversations.append(conversation)
    return result


def _messenger_message(record: dict) -> Message | None:
    if record.get("type") in ("Call", "Subscribe", "Unsubscribe"):
        return None
    content = record.get("content")
    text = fix_mojibake(content) if isinstance(content, str) else ""
    media = ("photos", "videos", "audio_files", "gifs", "sticker", "files")
    if not text.strip() and any(key in record for key in media):
        text = MEDIA_PLACEHOLDER
    moment = _from_epoch(int(record["timestamp_ms"]) / 1000)
    return Message(clean_name(fix_mojibake(str(record["sender_name"]))), text, moment)


# ----------------------------------------------------------------------------------------------
# iMessage: the CSV (rows newest first) and the .txt of imessage-exporter

_IMESSAGE_DATE = re.compile(r"([A-Z][a-z]{2}) (\d{1,2}), (\d{4})\s+(\d{1,2}):(\d{2}):(\d{2})\s*([AP]M)\b")
_MONTHS = {name: number for number, name in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1)}


def read_imessage_csv(text: str, name: str, config: ChatDataConfig) -> Imported:
    result = Imported("imessage-csv")
    conversations: dict[str, Conversation] = {}
    _, rows = _csv_rows(text, result)
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
        if previous_blank and _IMESSAGE_DATE.match(line.strip()):
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
    month, day, year, hour, minute, second, half = _IMESSAGE_DATE.match(block[0]).groups()
    moment = datetime(int(year), _MONTHS[month], int(day), int(hour) % 12 + (12 if half == "PM" else 0),
                      int(minute), int(second))
    sender = clean_name(block[1])
    if not sender:
        raise ValueError("no sender line")
    body = block[2:]
    if "Tapbacks:" in body:  # the reactions listed under a message are not its words
        body = body[:body.index("Tapbacks:")]
    return Message(sender, "\n".join(body).strip(), moment, ("Me",) if sender == "Me" else ())


# ----------------------------------------------------------------------------------------------
# Discord (DiscordChatExporter): JSON and CSV


def read_discord_json(data, name: str) -> Imported:
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
        raise UserError(f"{name}: not a Discord export (expected a \"messages\" list).")
    result = Imported("discord-json")
    channel = data.get("channel") if isinstance(data.get("channel"), dict) else {}
    guild = data.get("guild") if isinstance(data.get("guild"), dict) else {}
    group = str(channel.get("type", "DirectTextChat")) != "DirectTextChat"  # server channels are groups
    title = f"{guild.get('name', '')} #{channel.get('name', '')}".strip()
    conversation = Conversation(f"discord:{channel.get('id') or name}", title, [], group)
    for record in data["messages"]:
        try:
            message = _discord_message(record)
        except MALFORMED:
            result.malformed += 1
            continue
        if message:
            conversation.messages.append(message)
    result.conversations.append(conversation)
    return result


def _discord_message(record: dict) -> Message | None:
    if record.get("type", "Default") not in ("Default", "Reply"):
        return None  # joins, pins, calls
    author = record["author"]
    sender = clean_name(author.get("name") or author["id"])
    aliases = tuple(str(author[key]) for key in ("nickname", "id") if author.get(key))
    text = str(record.get("content") or "")
    if not text.strip() and (record.get("attachments") or record.get("stickers") or record.get("embeds")):
        text = MEDIA_PLACEHOLDER
    moment = parse_time_text(str(record["timestamp"]))
    if moment is None:
        raise ValueError(f"unreadable timestamp {record['timestamp']!r}")
    return Message(sender, text, moment, aliases)


def read_discord_csv(text: str, name: str, config: ChatDataConfig) -> Imported:
    result = Imported("discord-csv")
    messages = []
    _, rows = _csv_rows(text, result)
    for row in rows:
        try:
            sender = clean_name(row["Author"])
            moment = parse_time_text(row["Date"])
            if not sender or moment is None:
                raise ValueError("no author or date")
            content = row["Content"] or (MEDIA_PLACEHOLDER if row.get("Attachments") else "")
            aliases = (sender.split("#")[0], row["AuthorID"])  # "bruno#1234" in older exports
            messages.append(Message(sender, content, moment, aliases))
        except MALFORMED:
            result.malformed += 1
    result.conversations.append(Conversation(f"discord-csv:{name}", Path(name).stem, messages))
    return result


# ----------------------------------------------------------------------------------------------
# Any other CSV (--columns) and hand-written JSONL pairs


def read_csv_columns(text: str, name: str, config: ChatDataConfig) -> Imported:
    result = Imported("csv")
    columns = config.column_map()
    header, rows = _csv_rows(text, result)
    missing = [column for column in columns.values() if column not in header]
    if missing:
        raise UserError(f"{name}: no column {missing[0]!r} (from --columns); its columns are "
                        f"{', '.join(map(repr, header[:12]))}.")
    conversations: dict[str, Conversation] = {}
    for row in rows:
        try:
            sender = clean_name(row[columns["sender"]])
            moment = parse_time_text(row[columns["time"]]) if "time" in columns else None
            if not sender or ("time" in columns and moment is None):
                raise ValueError("no sender or time")
            key = row[columns["conversation"]] if "conversation" in columns else Path(name).stem
        except MALFORMED:
            result.malformed += 1
            continue
        if key not in conversations:
            conversations[key] = Conversation(f"csv:{name}:{key}", key, [])
        conversations[key].messages.append(Message(sender, row[columns["text"]], moment))
    result.conversations.extend(conversations.values())
    return result


def read_jsonl(text: str, name: str, config: ChatDataConfig) -> Imported:
    stripped = text.strip()
    if stripped.startswith("[") or (stripped.startswith("{") and "\n" not in stripped):
        try:
            return read_json_pairs(json.loads(stripped), name)  # a JSON list of pairs, or one pair
        except (ValueError, RecursionError):
            pass  # not one JSON value: read it line by line
    result = Imported("jsonl")
    for line in text.splitlines():
        if line.strip():
            try:
                result.pairs.append(_pair(json.loads(line)))
            except MALFORMED:
                result.malformed += 1
    return result


def read_json_pairs(data, name: str) -> Imported:
    result = Imported("jsonl")
    for record in data if isinstance(data, list) else [data]:
        try:
            result.pairs.append(_pair(record))
        except MALFORMED:
            result.malformed += 1
    return result


def _pair(record) -> tuple[str, str]:
    if not isinstance(record["input"], str) or not isinstance(record["output"], str):
        raise TypeError("input and output must be strings")
    return record["input"], record["output"]


TEXT_READERS = {"whatsapp": read_whatsapp, "imessage-csv": read_imessage_csv, "imessage-text": read_imessage_text,
                "discord-csv": read_discord_csv, "csv": read_csv_columns, "jsonl": read_jsonl}
JSON_READERS = {"telegram": read_telegram, "messenger": read_messenger, "instagram": read_messenger,
                "discord-json": read_discord_json, "jsonl": read_json_pairs}


# ----------------------------------------------------------------------------------------------
# Times: every importer ends with naive datetimes (local where the export is local, else UTC)

_APPLE_EPOCH = 978307200  # 2001-01-01 in Unix seconds: iMessage counts from there
_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M:%S", "%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M",
                 "%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %I:%M %p", "%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M",
                 "%b %d, %Y %I:%M:%S %p", "%b %d, %Y %I:%M %p", "%d-%b-%y %I:%M %p", "%d %b %Y %H:%M")


def parse_time_text(value) -> datetime | None:
    """A time written as Unix or Apple epoch numbers, ISO 8601, or a few common layouts; None if not."""
    text = " ".join(str(value or "").replace("\u202f", " ").split())
    if re.fullmatch(r"-?\d+(?:\.\d+)?", text):
        return _from_epoch(float(text))
    try:
        return _naive_utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        pass
    for layout in _TIME_FORMATS:
        try:
            return datetime.strptime(text, layout)
        except ValueError:
            continue
    return None


def _from_epoch(number: float) -> datetime:
    if number >= 1e17:  # nanoseconds: Apple's (since 2001) below 1e18, Unix ones above
        seconds = number / 1e9 + (_APPLE_EPOCH if number < 1e18 else 0)
    elif number >= 1e11:  # milliseconds
        seconds = number / 1000
    else:
        seconds = number
    return datetime(1970, 1, 1) + timedelta(seconds=seconds)


def _naive_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


# ----------------------------------------------------------------------------------------------
# Cleaning: each rule counts the messages it changed or dropped

# \x01 \x02 \x03 are the trainer's markers, so no control character may reach the output; neither may
# the invisible bidi marks iOS inserts, nor lone surrogates (from JSON escapes) that cannot be written.
_INVISIBLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff\ud800-\udfff]")
_MEDIA = re.compile(
    r"<Media omitted>|<attached: [^>\n]*>|<This message was edited>|\ufffc"
    r"|^(?:.*\s)?(?:image|video|audio|sticker|GIF|document|Contact card|media) omitted$"
    r"|^(?:This message was deleted|You deleted this message|null|Waiting for this message\. This may take a while)\.?$"
    r"|^.+ sent (?:an attachment|a photo|a video|a sticker|a GIF|a voice message|\d+ photos)\.$"
    r"|^(?=\S*/Attachments/\S)\S+$", re.IGNORECASE | re.MULTILINE)  # (linear on a huge line)
_TAPBACK = "(?:Loved|Liked|Disliked|Laughed at|Emphasized|Emphasised|Questioned)"
_REACTION = re.compile(
    _TAPBACK + r" (?:[“\"].*[”\"]|an? (?:image|photo|video|movie|attachment|audio message|sticker|GIF|message))"
    r"|(?:Reacted|Removed) .{1,20} (?:to|from) [“\"].*[”\"]"
    r"|(?i:.{0,60}\breacted\b.{0,20}\bto (?:your|a|their|his|her) message\.?)"
    r"|Liked a message", re.DOTALL)
_LINK = re.compile(r"(?:https?://|www\.)\S*[^\s.,!?;:)\]'\"”’>]", re.IGNORECASE)
# The look-behinds let a match start only where a run starts, and the phone pattern is bounded:
# without them a 4 MB message of "hahaha..." took minutes (every position rescanned the run).
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"(?<![\w+])\+?\(?\d[\d \t().-]{5,40}\d(?!\w)")
_NOT_PHONE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[./-]\d{1,2}[./-]\d{2,4}|\d{1,3}(?:[.,]\d{3})+|\d+[.,]\d+")
_EMOJI = re.compile("[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF\u2300-\u23FF\uFE0E\uFE0F\u200D\u20E3"
                    "\U000E0020-\U000E007F]")
_REPEATS = re.compile(r"(\D)\1{3,}")  # not digits: 1000000 is a number, not an exclamation
RULES = ("before --since", "outside --top_contacts", "control/invisible characters removed", "reactions dropped",
         "media placeholders removed", "links replaced", "e-mails/phones scrubbed", "emoji removed",
         "lowercased", "repeats squeezed", "messages empty after cleaning", "pairs empty after cleaning",
         "replies outside --reply_window")


class Cleaner:
    """Applies the cleaning options to one text at a time and counts what each rule did."""

    def __init__(self, config: ChatDataConfig, counts: Counter):
        self.config = config
        self.counts = counts

    def clean(self, text: str) -> str:
        """The text as it will be learned, or "" when a rule drops it whole."""
        config = self.config
        text = str(text).replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n")
        text = self._rule("control/invisible characters removed", _INVISIBLE.sub("", text), text)
        if config.drop_reactions and _REACTION.fullmatch(text.strip()):
            self.counts["reactions dropped"] += 1
            return ""
        if config.drop_media:
            text = self._remove("media placeholders removed", _MEDIA, text)
        if config.replace_links:
            text = self._rule("links replaced", _LINK.sub("link", text), text)
        if config.scrub_private:
            text = self._rule("e-mails/phones scrubbed", _PHONE.sub(_phone, _EMAIL.sub("email", text)), text)
        if config.drop_emoji:
            text = self._remove("emoji removed", _EMOJI, text)
        if config.lowercase:
            text = self._rule("lowercased", text.lower(), text)
        if config.squeeze_repeats:
            text = self._rule("repeats squeezed", _REPEATS.sub(r"\1\1\1", text), text)
        text = text.strip()
        if not text:
            self.counts["messages empty after cleaning"] += 1
        return text

    def _rule(self, name: str, new: str, old: str) -> str:
        if new != old:
            self.counts[name] += 1
        return new

    def _remove(self, name: str, pattern: re.Pattern, text: str) -> str:
        if not pattern.search(text):
            return text
        self.counts[name] += 1
        return _tidy_spaces(pattern.sub("", text))


def _tidy_spaces(text: str) -> str:
    """Removing a word from the middle of a line leaves two spaces, or a space at a line's end."""
    return re.sub(r"[ \t]*\n[ \t]*", "\n", re.sub(r"[ \t]{2,}", " ", text)).strip()


def _phone(match: re.Match) -> str:
    candidate = match.group()
    digits = sum(char.isdigit() for char in candidate)
    if not 7 <= digits <= 15 or _NOT_PHONE.fullmatch(candidate):
        return candidate  # a date, an amount, a decimal
    if candidate[0] != "+" and digits < 9 and not re.search(r"[ ().-]", candidate):
        return candidate  # a plain number such as 1000000
    return "phone"


# ----------------------------------------------------------------------------------------------
# Pairs: their turn, then my reply within the window


@dataclass
class Turn:
    mine: bool
    texts: list[str]
    first: datetime | None
    last: datetime | None


def turns_of(messages: list[Message], is_me) -> list[Turn]:
    """Consecutive messages of one person become one turn."""
    turns, previous_speaker = [], None
    for message in messages:
        mine = is_me(message)
        speaker = "\x00me" if mine else message.sender
        if turns and speaker == previous_speaker:
            turns[-1].texts.append(message.text)
            turns[-1].last = message.time or turns[-1].last
        else:
            turns.append(Turn(mine, [message.text], message.time, message.time))
        previous_speaker = speaker
    return turns


def reply_pairs(messages: list[Message], is_me, window: timedelta, counts: Counter) -> list[tuple[str, str]]:
    pairs = []
    turns = turns_of(messages, is_me)
    for theirs, mine in zip(turns, turns[1:]):
        if not mine.mine or theirs.mine:
            continue
        if theirs.last and mine.first and mine.first - theirs.last > window:
            counts["replies outside --reply_window"] += 1
            continue
        pairs.append((" | ".join(theirs.texts), " | ".join(mine.texts)))
    return pairs


def select_conversations(conversations: list[Conversation], config: ChatDataConfig, report: Report) -> list[Conversation]:
    """Group chats out (unless asked for), then --since, then --top_contacts."""
    chosen = []
    for conversation in conversations:
        if conversation.is_group() and not config.group_chats:
            report.group_chats_skipped += 1
        else:
            chosen.append(conversation)
    since = config.since_date()
    if since:
        start = datetime.combine(since, time.min)
        for index, conversation in enumerate(chosen):
            kept = [m for m in conversation.messages if m.time is None or m.time >= start]
            report.counts["before --since"] += len(conversation.messages) - len(kept)
            chosen[index] = dataclasses.replace(conversation, messages=kept)
    if config.top_contacts:
        chosen.sort(key=lambda c: len(c.messages), reverse=True)
        report.counts["outside --top_contacts"] += sum(len(c.messages) for c in chosen[config.top_contacts:])
        chosen = chosen[:config.top_contacts]
    return chosen


def merge_conversations(conversations: list[Conversation]) -> list[Conversation]:
    """One chat split over several files becomes one, in time order (Messenger and iMessage list newest first)."""
    merged: dict[str, Conversation] = {}
    for conversation in conversations:
        if conversation.key in merged:
            merged[conversation.key].messages.extend(conversation.messages)
        else:
            merged[conversation.key] = dataclasses.replace(conversation, messages=list(conversation.messages))
    for conversation in merged.values():
        if all(message.time for message in conversation.messages):
            conversation.messages.sort(key=lambda message: message.time)
        elif _newest_first(conversation.messages):
            conversation.messages.reverse()
    return list(merged.values())


def _newest_first(messages: list[Message]) -> bool:
    times = [message.time for message in messages if message.time]
    return len(times) > 1 and times[0] > times[-1]


# ----------------------------------------------------------------------------------------------
# Facts about the person, as question/answer pairs

_FACT_QUESTIONS = {
    "name": ("what is your name?", "what's your name?", "who are you?"),
    "hometown": ("where are you from?", "where is your hometown?"),
    "age": ("how old are you?",),
    "city": ("where do you live?",),
    "location": ("where do you live?",),
    "job": ("what do you do?", "what is your job?"),
    "occupation": ("what do you do?", "what is your occupation?"),
    "birthday": ("when is your birthday?",),
}


def fact_pairs(path: str) -> list[tuple[str, str]]:
    """{"name": "Ana", ...} as questions and answers, or a list of {"input", "output"} written by hand."""
    try:
        text, _ = decode(Path(path).read_bytes())
    except OSError as err:
        raise UserError(f"cannot read --facts={path}: {err.strerror or err}") from None
    data = load_json(text, path)
    if isinstance(data, dict):
        return [(question, _fact_answer(value)) for key, value in data.items() if value is not None
                for question in _FACT_QUESTIONS.get(key.strip().lower(), (f"what is your {key.strip().replace('_', ' ')}?",))]
    if isinstance(data, list):
        try:
            return [_pair(record) for record in data]
        except MALFORMED:
            pass
    raise UserError(f'--facts={path}: expected an object like {{"name": "Ana", "hometown": "Porto"}} '
                    'or a list of {"input": ..., "output": ...}.')


def _fact_answer(value) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


# ----------------------------------------------------------------------------------------------
# Report and command line


@dataclass
class FileReport:
    path: str
    format: str
    messages: int = 0
    conversations: int = 0
    malformed: int = 0  # records skipped
    undecodable: int = 0  # bytes that were not UTF-8, replaced
    me_found: bool = True
    top_speakers: list[tuple[str, int]] = field(default_factory=list)
    note: str = ""


@dataclass
class Report:
    me: str
    out: str
    files: list[FileReport] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)  # RULES -> messages (or pairs) affected
    conversations_used: int = 0
    group_chats_skipped: int = 0
    pairs: int = 0  # from conversations and JSONL
    fact_pairs: int = 0
    vocabulary: int = 0  # distinct characters in the inputs and outputs written

    def text(self) -> str:
        lines = [f"chat_data: {len(self.files)} file(s) -> {self.out}"]
        for file in self.files:
            if file.format == "skipped":
                lines.append(f"  {file.path}: skipped ({file.note})")
                continue
            read = (f"{file.messages} pairs" if file.format == "jsonl"
                    else f"{file.messages} messages in {file.conversations} conversation(s)")
            lines.append(f"  {file.path}: {file.format}, {read}, {file.malformed} malformed skipped"
                         + (f", {file.undecodable} undecodable bytes replaced" if file.undecodable else ""))
            if file.note:
                lines.append(f"    {file.note}")
        lines.append("cleaning (messages affected):")
        lines += [f"  {rule:38s} {self.counts[rule]}" for rule in RULES]
        lines.append(f"conversations: {self.conversations_used} used, {self.group_chats_skipped} skipped as group chats"
                     + (" (--group_chats=true keeps them)" if self.group_chats_skipped else ""))
        lines.append(f"pairs written: {self.pairs + self.fact_pairs} ({self.pairs} from chats, {self.fact_pairs} from facts)")
        lines.append(f"vocabulary: {self.vocabulary} distinct characters")
        return "\n".join(lines)


def expand_paths(paths: list[Path]) -> list[tuple[Path, bool]]:
    """Files to read, each with whether it was found inside a folder (unknown files there are skipped)."""
    found = []
    for path in paths:
        if path.is_dir():
            found += [(file, True) for file in sorted(path.rglob("*"))
                      if file.is_file() and file.suffix.lower() in (".txt", ".json", ".csv", ".jsonl")]
        elif path.is_file():
            found.append((path, False))
        else:
            raise UserError(f"{path}: no such file or folder.")
    return found


def file_report(path: Path, imported: Imported, undecodable: int, is_me, me: str) -> FileReport:
    messages = [m for c in imported.conversations for m in c.messages]
    speakers = Counter(m.sender for m in messages).most_common(5)
    report = FileReport(str(path), imported.format, len(messages) or len(imported.pairs), len(imported.conversations),
                        imported.malformed, undecodable, any(map(is_me, messages)), speakers)
    if messages and not report.me_found:
        shown = ", ".join(f"{name} ({count})" for name, count in speakers)
        report.note = f"--me={me!r} matches nobody here; top speakers: {shown}"
    return report


def build_pairs(paths: list[Path], config: ChatDataConfig) -> tuple[list[tuple[str, str]], Report]:
    """Read every export, shape and clean the pairs; nothing is written."""
    report = Report(config.me, config.out)
    is_me = me_matcher(config.me)
    conversations, given_pairs = [], []
    out = Path(config.out).resolve()
    for path, in_folder in expand_paths(paths):
        if path.resolve() == out:
            if in_folder:
                continue  # last run's output, inside a folder being read
            raise UserError(f"--out={config.out} is one of the inputs; it would be overwritten. Choose another --out.")
        try:
            imported, undecodable = read_export(path, config)
        except UserError as err:
            if not in_folder:
                raise
            reason = str(err).removeprefix(f"{path}: ").split(" (")[0]  # without the list of formats
            report.files.append(FileReport(str(path), "skipped", note=reason))
            continue
        report.files.append(file_report(path, imported, undecodable, is_me, config.me))
        conversations += imported.conversations
        given_pairs += imported.pairs
    speakers = Counter(m.sender for c in conversations for m in c.messages)
    if speakers and not config.me.strip():
        raise UserError(f"say whose replies to learn with --me=NAME, as the export spells it; speakers seen: "
                        f"{_top(speakers)}")
    cleaner = Cleaner(config, report.counts)
    window = timedelta(minutes=config.reply_window)
    pairs = []
    for conversation in select_conversations(merge_conversations(conversations), config, report):
        report.conversations_used += 1
        cleaned = [dataclasses.replace(m, text=cleaner.clean(m.text)) for m in conversation.messages]
        pairs += reply_pairs([m for m in cleaned if m.text], is_me, window, report.counts)
    pairs = _clean_pairs(pairs + given_pairs, cleaner, report.counts)
    report.pairs = len(pairs)
    if config.facts:
        facts = _clean_pairs(fact_pairs(config.facts), cleaner, report.counts) * config.facts_repeat
        report.fact_pairs = len(facts)
        pairs += facts
    if not pairs:
        raise UserError(_why_no_pairs(config, report, speakers))
    report.vocabulary = len(set("".join(text for pair in pairs for text in pair)))
    return pairs, report


def _clean_pairs(pairs, cleaner: Cleaner, counts: Counter) -> list[tuple[str, str]]:
    kept = []
    for given, reply in pairs:
        given, reply = cleaner.clean(given), cleaner.clean(reply)
        if given and reply:
            kept.append((given, reply))
        else:
            counts["pairs empty after cleaning"] += 1
    return kept


def _top(speakers: Counter) -> str:
    return ", ".join(f"{name!r} ({count})" for name, count in speakers.most_common(8)) or "nobody"


def _why_no_pairs(config: ChatDataConfig, report: Report, speakers: Counter) -> str:
    reason = "no pairs came out"
    if speakers and not any(file.me_found for file in report.files if file.format != "skipped"):
        return f"{reason}: --me={config.me!r} matches none of the speakers seen: {_top(speakers)}"
    if report.group_chats_skipped:
        reason += f"; {report.group_chats_skipped} group chat(s) were skipped (--group_chats=true keeps them)"
    if report.counts["replies outside --reply_window"]:
        reason += f"; {report.counts['replies outside --reply_window']} replies came later than --reply_window"
    return f"{reason}. Speakers seen: {_top(speakers)}"


def write_pairs(pairs: list[tuple[str, str]], out: Path) -> None:
    """One JSON object a line, written atomically so a crash never leaves half a file."""
    with atomic_write(out, text="utf-8") as file:
        for given, reply in pairs:
            file.write(json.dumps({"input": given, "output": reply}, ensure_ascii=False) + "\n")


def main(argv: list[str]) -> Report | None:
    args = parse_args(argv, [ChatDataConfig], max_positional=1_000_000)
    if args.help:
        print(help_text([ChatDataConfig], USAGE, show_presets=False))
        return None
    if args.preset:
        raise UserError("chat_data.py has no presets; see --help for its options.")
    config = apply(ChatDataConfig(), args.overrides)
    config.validate()
    if not args.positional:
        raise UserError(f"name at least one exported chat. {USAGE}")
    pairs, report = build_pairs([Path(p) for p in args.positional], config)
    write_pairs(pairs, Path(config.out))
    print(report.text())
    return report


if __name__ == "__main__":
    run_cli(main)

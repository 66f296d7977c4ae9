"""Slack: a workspace export, the .zip Slack gives (or the folder it unpacks to).

    users.json          [{"id": "U01", "name": "ana", "real_name": "Ana Silva", "profile": {...}, "is_bot": false}]
    channels.json       public channels: [{"id": "C01", "name": "general", "members": [...]}]
    groups.json, mpims.json, dms.json    private channels, group DMs, direct messages (where the plan exports them)
    general/2024-01-04.json              one file a day: [{"type": "message", "user": "U01", "text": "...", "ts": "..."}]
    D01ABC/2024-01-04.json               a direct message's folder is named by its id

User ids become names, <@U01> mentions, <#C01|general> channels and <https://...|links> are unwrapped,
*bold* _italic_ ~strike~ lose their marks. Bots and join/leave/topic messages are skipped. A thread
(a message's replies) is a conversation of its own, in order: its first message, then the replies.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import PurePosixPath

from gptlib.errors import UserError

from .files import decode, load_json
from .model import MALFORMED, MEDIA_PLACEHOLDER, Conversation, Imported, Message, clean_name
from .times import from_epoch

LISTINGS = (("channels.json", True), ("groups.json", True), ("mpims.json", True), ("dms.json", False))
# Subtypes that are Slack's own notices, not anyone's words.
_NOTICES = {"channel_join", "channel_leave", "channel_topic", "channel_purpose", "channel_name", "channel_archive",
            "channel_unarchive", "group_join", "group_leave", "group_topic", "group_purpose", "group_name",
            "group_archive", "group_unarchive", "pinned_item", "unpinned_item", "reminder_add", "joiner_notification",
            "channel_convert_to_private", "channel_convert_to_public", "huddle_thread", "sh_room_created",
            "channel_posting_permissions", "slackbot_response", "reply_broadcast_removed"}
_BOTS = {"bot_message", "bot_add", "bot_remove", "bot_enable", "bot_disable", "app_conversation_join"}
_DELETED = {"tombstone", "message_deleted"}
_ANGLE = re.compile(r"<([^<>\n]{1,1000})>")
_MARKS = [re.compile(r"(?<![\w*])\*(?=\S)([^*\n]{1,1000}?)(?<=\S)\*(?![\w*])"),
          re.compile(r"(?<![\w_])_(?=\S)([^_\n]{1,1000}?)(?<=\S)_(?![\w_])"),
          re.compile(r"(?<![\w~])~(?=\S)([^~\n]{1,1000}?)(?<=\S)~(?![\w~])")]

Files = dict[str, Callable[[], bytes]]  # path inside the export -> its bytes


def is_slack_export(paths: list[str]) -> str | None:
    """The folder inside an archive or tree that holds users.json beside channels.json (or dms.json), or None."""
    names = set(paths)
    for path in sorted(paths, key=len):
        pure = PurePosixPath(path)
        if pure.name == "users.json":
            root = "" if str(pure.parent) == "." else f"{pure.parent}/"
            if any(f"{root}{listing}" in names for listing, _ in LISTINGS):
                return root
    return None


def read_slack_export(files: Files, name: str) -> Imported:
    result = Imported("slack")
    try:
        users = _users(_json(files, "users.json", name) or [])
    except UserError:
        users = {}  # names then come from each message's user_profile, where it has one
        result.note = "users.json could not be read; names are taken from the messages"
    folders = _folders(files, users, name)
    channel_names = {info["id"]: folder for folder, info in folders.items() if info.get("id")}
    for folder in sorted({path.split("/")[0] for path in files if path.count("/") == 1 and path.endswith(".json")}):
        # Not listed: a channel, unless named like a direct message's id ("D01ABC...")
        info = folders.get(folder, {"title": folder, "group": not re.fullmatch(r"D[A-Z0-9]{8,}", folder)})
        records = []
        for path in sorted(p for p in files if p.startswith(folder + "/") and p.endswith(".json")):
            try:
                day = _json(files, path, name)
                records += day if isinstance(day, list) else []
            except UserError:
                result.malformed += 1
        result.conversations += _channel(folder, info, records, users, channel_names, result)
    return result


def read_slack_day(data: list, name: str) -> Imported:
    """One day file given alone: names come from each message's user_profile, where the export has it."""
    if not isinstance(data, list):
        raise UserError(f"{name}: not a Slack day file (expected a list of messages).")
    result = Imported("slack")
    folder = PurePosixPath(name.replace("\\", "/")).parent.name or name
    result.conversations += _channel(folder, {"title": folder, "group": False}, data, {}, {}, result)
    return result


def is_slack_day(data) -> bool:
    first = next((record for record in data if isinstance(record, dict)), None) if isinstance(data, list) else None
    return bool(first) and "ts" in first and first.get("type") == "message"


def _json(files: Files, path: str, name: str):
    if path not in files:
        return None
    text, _ = decode(files[path]())
    return load_json(text, f"{name}/{path}")


def _users(records) -> dict[str, tuple[str, tuple[str, ...], bool]]:
    """id -> (the name shown, other spellings --me may use, is a bot)."""
    users = {}
    for record in records if isinstance(records, list) else []:
        if not isinstance(record, dict) or "id" not in record:
            continue
        profile = record.get("profile") if isinstance(record.get("profile"), dict) else {}
        spellings = [record.get("real_name"), profile.get("real_name"), profile.get("display_name"), record.get("name"),
                     str(record["id"])]
        spellings = [clean_name(s) for s in spellings if isinstance(s, str) and clean_name(s)]
        if not spellings:
            continue  # no id and no name: nobody to resolve
        users[str(record["id"])] = (spellings[0], tuple(spellings[1:]), bool(record.get("is_bot")))
    return users


def _folders(files: Files, users, name: str) -> dict[str, dict]:
    """Each listed conversation's folder -> its id, title and whether it is a group (DMs are not)."""
    folders = {}
    for listing, group in LISTINGS:
        try:
            records = _json(files, listing, name) or []
        except UserError:
            records = []
        for record in records if isinstance(records, list) else []:
            if not isinstance(record, dict):
                continue
            ident = str(record["id"]) if isinstance(record.get("id"), (str, int)) else ""
            folder = str(record.get("name") or ident)
            listed = record.get("members") if isinstance(record.get("members"), list) else []
            members = [users.get(m, (m,))[0] for m in listed if isinstance(m, str)]
            title = folder if group else ", ".join(members) or folder
            folders[folder] = {"id": ident, "title": title, "group": group}
            if ident:  # some exports name DM folders by id even where a name exists
                folders.setdefault(ident, folders[folder])
    return folders


def _channel(folder: str, info: dict, records: list, users, channel_names, result: Imported) -> list[Conversation]:
    """The channel's own timeline, and one conversation per thread (its first message, then its replies)."""
    main = Conversation(f"slack:{folder}", info["title"], [], info["group"], True)
    threads: dict[str, Conversation] = {}
    firsts: dict[str, Message] = {}
    for record in records:
        try:
            read = _message(record, users, channel_names, result.counts)
        except MALFORMED:
            result.malformed += 1
            continue
        if read is None:
            continue
        message, ts, thread = read
        if thread and thread != ts:
            threads.setdefault(thread, Conversation(f"slack:{folder}:{thread}", info["title"], [], info["group"], True))
            threads[thread].messages.append(message)
        else:
            main.messages.append(message)
            firsts[ts] = message
    for thread, conversation in threads.items():
        if thread in firsts:
            conversation.messages.insert(0, firsts[thread])
    conversations = [main, *threads.values()]
    for conversation in conversations:
        conversation.messages.sort(key=lambda m: m.time)
    return [c for c in conversations if c.messages]


def _message(record: dict, users, channel_names, counts) -> tuple[Message, str, str] | None:
    if record.get("type", "message") != "message":
        return None
    subtype = str(record.get("subtype") or "")
    user = str(record.get("user") or "")
    if subtype in _BOTS or (record.get("bot_id") and not user) or users.get(user, ("", (), False))[2]:
        counts["bot messages"] += 1
        return None
    if subtype in _NOTICES:
        counts["group events"] += 1
        return None
    if subtype in _DELETED:
        counts["deleted notices"] += 1
        return None
    ts = str(record["ts"])
    moment = from_epoch(float(ts))
    sender, aliases = _sender(record, user, users)
    text = unwrap(str(record.get("text") or ""), users, channel_names)
    if record.get("reactions"):
        counts["reactions"] += 1  # listed on the message, never part of its text
    if record.get("files") or record.get("attachments"):
        counts["media placeholders (any language)"] += 1
        text = f"{text} {MEDIA_PLACEHOLDER}".strip()
    thread = str(record.get("thread_ts") or "") if subtype != "thread_broadcast" else ""
    return Message(sender, text, moment, aliases), ts, thread


def _sender(record: dict, user: str, users) -> tuple[str, tuple[str, ...]]:
    if user in users:
        shown, aliases, _ = users[user]
        return shown, aliases
    profile = record.get("user_profile") if isinstance(record.get("user_profile"), dict) else {}
    spellings = [profile.get("real_name"), profile.get("display_name"), profile.get("name"), record.get("username"), user]
    spellings = [clean_name(s) for s in spellings if isinstance(s, str) and clean_name(s)]
    if not spellings:
        raise ValueError("no user")
    return spellings[0], tuple(spellings[1:])


def unwrap(text: str, users, channel_names) -> str:
    """Slack's markup as plain words: <@U01> -> @Ana Silva, <#C01|general> -> #general, <url|label> -> label."""
    def angle(match: re.Match) -> str:
        target, _, label = match.group(1).partition("|")
        if target.startswith("@"):
            return "@" + (label or users.get(target[1:], (target[1:],))[0])
        if target.startswith("#"):
            return "#" + (label or channel_names.get(target[1:], target[1:]))
        if target.startswith("!"):
            special = target[1:].split("^")[0]
            return label or ("" if special == "date" else "@" + special)
        return label or target.removeprefix("mailto:")
    text = _ANGLE.sub(angle, text)
    for mark in _MARKS:
        text = mark.sub(r"\1", text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")  # the only three Slack escapes

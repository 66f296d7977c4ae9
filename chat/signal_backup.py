"""Signal's own export: Settings > Chats > Export chat history (plaintext), a folder holding main.jsonl,
metadata.json and files/. main.jsonl is Signal's backup format (Backup.proto) as JSON, one frame a line:

    {"version": "1", "backupTimeMs": "1704535200000"}                     the backup's header
    {"account": {"givenName": "Ana", "familyName": "Silva", ...}}          you
    {"recipient": {"id": "2", "contact": {"profileGivenName": "Bruno", "profileFamilyName": "Costa", ...}}}
    {"recipient": {"id": "1", "self": {}}}  {"recipient": {"id": "3", "group": {"snapshot": {"title": {"title": "Trip"}}}}}
    {"chat": {"id": "1", "recipientId": "2"}}
    {"chatItem": {"chatId": "1", "authorId": "2", "dateSent": "1704404465000", "incoming": {...},
                  "standardMessage": {"text": {"body": "Hi"}, "quote": {...}, "attachments": [...], "reactions": [...]}}}

Numbers may come as strings (proto3's JSON) or numbers. Your messages carry your name and "Me".
"""
from __future__ import annotations

from gptlib.errors import UserError

from .model import MALFORMED, MEDIA_PLACEHOLDER, Conversation, Imported, Message, clean_name
from .times import from_epoch

FRAMES = {"account", "recipient", "chat", "chatItem", "stickerPack", "adHocCall", "notificationProfile", "chatFolder"}


def is_signal_backup(first) -> bool:
    return isinstance(first, dict) and ("backupTimeMs" in first or bool(FRAMES & set(first)))


def read_signal_backup(records: list, name: str) -> Imported:
    if not isinstance(records, list):
        raise UserError(f"{name}: not Signal's main.jsonl (expected one backup frame a line).")
    result = Imported("signal-backup")
    people: dict[str, tuple[str, bool]] = {}  # recipient id -> (name, is a group)
    chats: dict[str, Conversation] = {}
    me = "Me"
    for record in records:
        try:
            if not isinstance(record, dict):
                raise TypeError("not a frame")
            if "account" in record:
                me = _full_name(record["account"].get("givenName"), record["account"].get("familyName")) or "Me"
            elif "recipient" in record:
                people[str(record["recipient"]["id"])] = _recipient(record["recipient"], me)
            elif "chat" in record:
                chat = record["chat"]
                title, group = people.get(str(chat["recipientId"]), (str(chat["recipientId"]), False))
                chats[str(chat["id"])] = Conversation(f"signal:{title}", title, [], group)
            elif "chatItem" in record:
                _add_item(record["chatItem"], people, chats, me, result)
        except MALFORMED:
            result.malformed += 1
    result.conversations += [c for c in chats.values() if c.messages]
    return result


def _full_name(given, family) -> str:
    return clean_name(" ".join(part for part in (given, family) if isinstance(part, str) and part))


def _recipient(recipient: dict, me: str) -> tuple[str, bool]:
    if "self" in recipient:
        return me, False
    if "group" in recipient:
        title = ((recipient["group"].get("snapshot") or {}).get("title") or {}).get("title")
        return clean_name(title or f"group {recipient['id']}"), True
    contact = recipient.get("contact") or {}
    nickname = contact.get("nickname") or {}
    shown = (_full_name(nickname.get("given"), nickname.get("family"))
             or _full_name(contact.get("systemGivenName"), contact.get("systemFamilyName"))
             or _full_name(contact.get("profileGivenName"), contact.get("profileFamilyName"))
             or clean_name(contact.get("username") or "") or str(contact.get("e164") or recipient["id"]))
    return shown, False


def _add_item(item: dict, people, chats, me: str, result: Imported) -> None:
    conversation = chats[str(item["chatId"])]
    author = str(item["authorId"])
    mine = "outgoing" in item
    sender = me if mine else people.get(author, (author, False))[0]
    text = _item_text(item, result.counts)
    if text is None:
        return
    moment = from_epoch(float(item["dateSent"]))
    conversation.messages.append(Message(sender, text, moment, ("Me",) if mine else ()))


def _item_text(item: dict, counts) -> str | None:
    """The words of a chat item, the placeholder for media, or None for the app's own events."""
    if "standardMessage" in item:
        message = item["standardMessage"]
        if message.get("quote"):
            counts["quoted replies"] += 1  # the quoted message's words belong to that message
        if message.get("reactions"):
            counts["reactions"] += 1
        text = str((message.get("text") or {}).get("body") or "")
        if message.get("attachments"):
            counts["media placeholders (any language)"] += 1
            text = f"{text} {MEDIA_PLACEHOLDER}".strip()
        return text
    if "stickerMessage" in item:
        counts["stickers"] += 1
        return MEDIA_PLACEHOLDER
    if "remoteDeletedMessage" in item:
        counts["deleted notices"] += 1
        return None
    if "updateMessage" in item:
        update = item["updateMessage"]
        counts["call records" if "individualCall" in update or "groupCall" in update else "group events"] += 1
        return None
    if "directStoryReplyMessage" in item:
        reply = item["directStoryReplyMessage"]
        return str(((reply.get("textReply") or {}).get("text") or {}).get("body") or reply.get("emoji") or "")
    counts["media placeholders (any language)"] += 1  # contacts, payments, gift badges, view-once media
    return MEDIA_PLACEHOLDER

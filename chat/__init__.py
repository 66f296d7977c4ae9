"""The chat importer behind chat_data.py: exported chats in, {"input", "output"} pairs out.

Rooms, each importing only those above it (and `config`, `atomic_write` from the top level):
    options     ChatDataConfig: every option of chat_data.py
    model       Message, Conversation, Imported; who is "me"; the apps' own texts counted by importers
    files, times   bytes to text, JSON, timestamps
    cleaning    the cleaning rules, each counted
    csv_format, jsonl, whatsapp, telegram, telegram_html, meta (Messenger/Instagram), imessage, discord,
    line, kakao, signal, signal_backup, slack, google_chat, snapchat, skype:
                one importer per app family
    detect      which format a file is, and reading it
    sources     what to read: files, folders, .zip and .tar archives (a Slack export as one), and what was skipped and why
    report      what the run read, cleaned and wrote
    pairing     turns, replies within the window, duplicates across exports, which conversations take part
    facts       facts.json as question/answer pairs
"""

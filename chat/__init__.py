"""The chat importer behind chat_data.py: exported chats in, {"input", "output"} pairs out.

Rooms, each importing only those above it (and `config`, `atomic_write` from the top level):
    options     ChatDataConfig: every option of chat_data.py
    model       Message, Conversation, Imported; who is "me"
    files, times   bytes to text, JSON, timestamps
    csv_format, jsonl, whatsapp, telegram, meta (Messenger/Instagram), imessage, discord: one importer per app family
    detect      which format a file is, and reading it
    cleaning    the cleaning rules, each counted
    report      what the run read, cleaned and wrote
    pairing     turns, replies within the window, which conversations take part
    facts       facts.json as question/answer pairs
"""

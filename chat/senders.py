"""Who wrote this? Every message of the exports with its sender as the label: the rows that
`python gpt_final_version.py --task=classify` learns to label (docs/classify.md).

    python chat_data.py data/chat/example_whatsapp.txt --senders --out=data/chat/senders.jsonl

The messages are read and cleaned as for pairs (the apps' own texts dropped, private details
scrubbed, --exclude_contacts and --since honoured); each message is one row, group chats included.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from gptlib.atomic_write import atomic_write
from gptlib.errors import UserError

from .cleaning import Cleaner
from .options import ChatDataConfig
from .pairing import exclude_contacts, merge_conversations
from .report import Report
from .sources import find_sources, read_source

DEFAULT_OUT = "data/chat/senders.jsonl"  # --senders without --out: beside the pairs, never over them


def sender_rows(paths: list[Path], config: ChatDataConfig) -> list[dict]:
    """{"text", "label"} for every message with a sender and some text left after cleaning."""
    report = Report(config.me, config.out)
    conversations = []
    for source in find_sources(paths)[0]:
        conversations += read_source(source, config)[0].conversations
    nobody_is_me = lambda message: False  # every speaker is a label, you included
    kept = exclude_contacts(merge_conversations(conversations, report.counts), config.exclude_contacts, report, nobody_is_me)
    cleaner, since = Cleaner(config, report.counts), config.since_date()
    rows = []
    for conversation in kept:
        for message in conversation.messages:
            if not message.sender or message.sender.startswith("\x00"):  # the app's own lines
                continue
            if since and message.time and message.time.date() < since:
                continue
            text = cleaner.clean(message.text)
            if text:
                rows.append({"text": text, "label": message.sender})
    return rows


def write_sender_rows(paths: list[Path], config: ChatDataConfig) -> Counter:
    """Write the rows as JSON lines (atomically) and say how many each sender has; the counts."""
    rows = sender_rows(paths, config)
    senders = Counter(row["label"] for row in rows)
    if len(senders) < 2:
        found = f"only {next(iter(senders))!r}" if senders else "nobody"
        raise UserError(f"the exports hold messages of {found}: telling senders apart needs at least two.")
    out = Path(config.out)
    with atomic_write(out, text="utf-8") as file:
        for row in rows:
            file.write(json.dumps(row, ensure_ascii=False) + "\n")
    shown = ", ".join(f"{name} {count}" for name, count in senders.most_common(10))
    print(f"wrote {len(rows)} messages of {len(senders)} senders to {out} ({shown})")
    print(f"train a classifier on them: python gpt_final_version.py --task=classify --data={out}")
    return senders

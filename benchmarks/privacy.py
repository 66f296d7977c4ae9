"""What the scrubbing catches: the invented chat's private details, before (the hand-written rules
of version 0.9.0) and after (phonenumbers, python-stdnum and the rules in chat/scrub.py), and what
it changes in ordinary messages that hold numbers (times, dates, prices) that must be left alone.

    python -m benchmarks.privacy                       # the table of docs/llm-of-yourself.md
    python -m benchmarks.privacy --region=JP --write_chat=tests/fixtures/private/private_whatsapp.txt

The details are in tests/fixtures/private/details.json (every one invented); redact.txt beside it
lists what no pattern can find (a street, a password said without its keyword, a friend's name).
Each detail is said in a reply of an invented WhatsApp chat, which chat_data.py reads as any export.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from chat.cleaning import Cleaner
from chat.options import ChatDataConfig
from gptlib import cli
from gptlib.errors import run_cli

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "private"
USAGE = "usage: python -m benchmarks.privacy [--region=XX] [--write_chat=PATH]"
TEMPLATES = {"phone": ["call me on {}", "my new number is {}", "{} (that's mine)"], "iban": ["my IBAN is {}", "pay to {} thanks"],
             "card": ["use my card {}", "card: {} exp 12/27"], "email": ["mail me at {}", "write to {}"],
             "id": ["my number there is {}", "here: {} ok?"], "ip": ["the server is {}", "ssh to {} tonight"],
             "link": ["photos at {}"], "password": ["{}"], "address": ["{}"], "name": ["{}"]}

# The rules of version 0.9.0 (chat/cleaning.py), the "before" of the table.
OLD_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
OLD_PHONE = re.compile(r"(?<![\w+])\+?\(?\d[\d \t().-]{5,40}\d(?!\w)")
OLD_NOT_PHONE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[./-]\d{1,2}[./-]\d{2,4}|\d{1,3}(?:[.,]\d{3})+|\d+[.,]\d+")
OLD_LINK = re.compile(r"(?:https?://|www\.)\S*[^\s.,!?;:)\]'\"”’>]", re.IGNORECASE)


@dataclass
class PrivacyConfig:
    region: str = ""  # --region for the "after" columns (empty: no country hint)
    write_chat: str = ""  # also write the invented chat as a WhatsApp export to this path


def load() -> dict:
    return json.loads((FIXTURES / "details.json").read_text(encoding="utf-8"))


def messages(data: dict) -> list[tuple[list, str]]:
    """Each detail in a message: (the detail's row, the message)."""
    rows, seen = [], Counter()
    for row in data["details"]:
        kind, _, detail, _ = row
        templates = TEMPLATES[kind]
        message = data["messages"].get(detail) or templates[seen[kind] % len(templates)].format(detail)
        seen[kind] += 1
        rows.append((row, message))
    return rows


def whatsapp_chat(data: dict) -> str:
    """The invented chat: Bruno Costa asks, Ana Silva answers with each detail, then with each ordinary message."""
    lines, when = [], datetime(2024, 3, 1, 9, 0)
    replies = [message for _, message in messages(data)] + data["ordinary"]
    for i, reply in enumerate(replies):
        for sender, text in (("Bruno Costa", f"question {i + 1}?"), ("Ana Silva", reply)):
            lines.append(f"{when:%d/%m/%Y, %H:%M} - {sender}: {text}")
            when += timedelta(minutes=1)
        when += timedelta(hours=4)
    return "\n".join(lines) + "\n"


def _old_phone(match: re.Match) -> str:
    candidate = match.group()
    digits = sum(char.isdigit() for char in candidate)
    if not 7 <= digits <= 15 or OLD_NOT_PHONE.fullmatch(candidate):
        return candidate
    if candidate[0] != "+" and digits < 9 and not re.search(r"[ ().-]", candidate):
        return candidate
    return "phone"


def old_clean(text: str) -> str:
    return OLD_PHONE.sub(_old_phone, OLD_EMAIL.sub("email", OLD_LINK.sub("link", text)))


def old_spans(text: str) -> list[str]:
    """The e-mails and phones the rules of version 0.9.0 replaced in the text (links replaced first)."""
    text = OLD_LINK.sub("link", text)
    emails = [match.group() for match in OLD_EMAIL.finditer(text)]
    text = OLD_EMAIL.sub("email", text)
    return emails + [match.group() for match in OLD_PHONE.finditer(text) if _old_phone(match) == "phone"]


def leaked(detail: str, text: str) -> bool:
    """Whether the detail, or any word of it longer than 3 characters ("NWBK", "2671", "silva"), is still in the text."""
    words = [word for word in re.findall(r"\w+", detail) if len(word) > 3]
    return detail in text or any(re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text, re.IGNORECASE) for word in words)


def measure(region: str = "") -> dict:
    """Caught (nothing of the detail left in its message, see leaked) per kind, before and after, and ordinary messages changed."""
    data = load()
    default = Cleaner(ChatDataConfig(me="x", region=region), Counter())
    redacting = Cleaner(ChatDataConfig(me="x", region=region, redact_file=str(FIXTURES / "redact.txt")), Counter())
    kinds: dict[str, Counter] = {}
    missed = []
    for (kind, what, detail, _), message in messages(data):
        row = kinds.setdefault(kind, Counter())
        row["total"] += 1
        after = default.clean(message)
        row["before"] += not leaked(detail, old_clean(message))
        row["after"] += not leaked(detail, after)
        row["redact"] += not leaked(detail, redacting.clean(message))
        if leaked(detail, after):
            missed.append(f"{kind} ({what})")
    ordinary = data["ordinary"]
    changed_before = [text for text in ordinary if old_clean(text) != text]
    changed_after = [text for text in ordinary if default.clean(text) != text]
    return {"kinds": kinds, "missed_by_default": missed, "ordinary": len(ordinary),
            "changed_before": changed_before, "changed_after": changed_after, "counts": default.counts}


def table(result: dict) -> str:
    lines = ["| kind | details | caught before | caught now (default) | with --redact_file |", "| --- | --- | --- | --- | --- |"]
    total = Counter()
    for kind, row in result["kinds"].items():
        total.update(row)
        lines.append(f"| {kind} | {row['total']} | {row['before']} | {row['after']} | {row['redact']} |")
    lines.append(f"| **all** | {total['total']} | {total['before']} | {total['after']} | {total['redact']} |")
    lines.append(f"| ordinary messages changed (false positives) | {result['ordinary']} | {len(result['changed_before'])} | "
                 f"{len(result['changed_after'])} | |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    args = cli.parse_args(argv, [PrivacyConfig])
    if args.help:
        print(cli.help_text([PrivacyConfig], USAGE, show_presets=False))
        return
    config = cli.apply(PrivacyConfig(), args.overrides)
    if config.write_chat:
        Path(config.write_chat).write_text(whatsapp_chat(load()), encoding="utf-8")
        print(f"wrote {config.write_chat}")
    result = measure(config.region)
    print(table(result))
    print("missed by default:", ", ".join(result["missed_by_default"]) or "none")
    print("ordinary messages changed before:", result["changed_before"])
    print("ordinary messages changed now:", result["changed_after"])


if __name__ == "__main__":
    run_cli(main)

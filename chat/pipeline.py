"""From export files to cleaned training pairs: read every source, pair my replies, clean, report.

chat_data.py is the command line over this; the readers (one module per app family), the cleaning
rules, the pairing and the report live beside it in this package.
"""
from __future__ import annotations

import dataclasses
import json
from collections import Counter
from datetime import timedelta
from pathlib import Path

from chat.cleaning import Cleaner
from chat.facts import fact_pairs
from chat.model import me_matcher
from chat.options import ChatDataConfig
from chat.pairing import exclude_contacts, merge_conversations, select_conversations, session_records
from chat.report import FileReport, Report, file_report
from chat.sources import find_sources, read_source
from gptlib.atomic_write import atomic_write
from gptlib.cli import apply, help_text, parse_args
from gptlib.errors import UserError

USAGE = 'usage: python chat_data.py EXPORT... --me="Your Name" [--out=data/chat/pairs.jsonl] [--name=value ...]'


def build_pairs(paths: list[Path], config: ChatDataConfig) -> tuple[list[tuple[str, str]], Report]:
    """Read every export, shape and clean the pairs; nothing is written."""
    report = Report(config.me, config.out)
    is_me = me_matcher(config.me)
    conversations, given_pairs = [], []
    out = Path(config.out).resolve()
    sources, report.skipped = find_sources(paths)
    for source in sources:
        if not source.member and source.path.resolve() == out:
            if source.in_folder:
                continue  # last run's output, inside a folder being read
            raise UserError(f"--out={config.out} is one of the inputs; it would be overwritten. Choose another --out.")
        try:
            imported, undecodable = read_source(source, config)
        except UserError as err:
            if not source.in_folder:
                raise
            reason = str(err).removeprefix(f"{source.name}: ").split(" (")[0]  # without the list of formats
            report.files.append(FileReport(source.name, "skipped", note=reason))
            continue
        report.files.append(file_report(source.name, imported, undecodable, is_me, config.me))
        report.app_texts.update(imported.counts)
        conversations += imported.conversations
        given_pairs += imported.pairs
    speakers = Counter(m.sender for c in conversations for m in c.messages)
    if speakers and not config.me.strip():
        raise UserError(f"say whose replies to learn with --me=NAME, as the export spells it; speakers seen: "
                        f"{_top(speakers)}")
    cleaner = Cleaner(config, report.counts)
    window = timedelta(minutes=config.reply_window)
    silence = timedelta(hours=config.silence_hours)
    merged = exclude_contacts(merge_conversations(conversations, report.counts), config.exclude_contacts, report, is_me)
    gap = timedelta(hours=config.session_gap_hours)
    for conversation in select_conversations(merged, config, report):
        report.conversations_used += 1
        cleaned = [dataclasses.replace(m, text=cleaner.clean(m.text)) for m in conversation.messages]
        records = _clean_records(session_records([m for m in cleaned if m.text], is_me, window, report.counts, gap,
                                                 silence, conversation.is_group()), cleaner, report.counts)
        report.pairs_per_contact[_contact(conversation, is_me)] += len(records)
        report.contexts += records
    pairs = [(r["input"], r["output"]) for r in report.contexts] + _clean_pairs(given_pairs, cleaner, report.counts)
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


def _clean_records(records: list[dict], cleaner: Cleaner, counts: Counter) -> list[dict]:
    """The chat's replies as _clean_pairs cleans pairs, each keeping its own context (never looked up
    by its words: two chats may hold the same question and answer)."""
    kept = []
    for record in records:
        cleaned = _clean_pairs([(record["input"], record["output"])], cleaner, counts)
        if cleaned:
            kept.append(record | {"input": cleaned[0][0], "output": cleaned[0][1]})
    return kept


def _contact(conversation, is_me) -> str:
    """Whom a chat's pairs answer: the other person, or a group chat's title."""
    others = sorted({m.sender for m in conversation.messages if not is_me(m) and not m.sender.startswith("\x00")})
    if conversation.is_group() or len(others) != 1:
        return conversation.title or ", ".join(others[:3]) or "(nobody named)"
    return others[0]


def _top(speakers: Counter) -> str:
    return ", ".join(f"{name!r} ({count})" for name, count in speakers.most_common(8)) or "nobody"


def _why_no_pairs(config: ChatDataConfig, report: Report, speakers: Counter) -> str:
    reason = "no pairs came out"
    if speakers and not any(file.me_found for file in report.files if file.format != "skipped"):
        return f"{reason}: --me={config.me!r} matches none of the speakers seen: {_top(speakers)}"
    if report.group_chats_skipped:
        reason += f"; {report.group_chats_skipped} group chat(s) were skipped (--group_chats=true keeps them)"
    skipped = [file for file in report.files if file.format == "skipped"]
    if skipped:
        reason += f"; {len(skipped)} file(s) skipped, first {skipped[0].path} ({skipped[0].note})"
    if report.counts["replies outside --reply_window"]:
        reason += f"; {report.counts['replies outside --reply_window']} replies came later than --reply_window"
    return f"{reason}. Speakers seen: {_top(speakers)}"


def write_pairs(pairs: list[tuple[str, str]], out: Path, contexts: list | None = None) -> None:
    """One JSON object a line, written atomically so a crash never leaves half a file. A reply read
    from a chat carries the turns of its session before it ("context") and its session and time."""
    contexts = contexts or []
    with atomic_write(out, text="utf-8") as file:
        for index, (given, reply) in enumerate(pairs):
            record = contexts[index] if index < len(contexts) else {"input": given, "output": reply}
            file.write(json.dumps(record, ensure_ascii=False) + "\n")


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
    if config.senders:  # "who wrote this?": each message labelled with its sender (chat/senders.py)
        from chat.senders import DEFAULT_OUT, write_sender_rows
        return write_sender_rows([Path(p) for p in args.positional], dataclasses.replace(config, out=args.overrides.get("out", DEFAULT_OUT)))
    pairs, report = build_pairs([Path(p) for p in args.positional], config)
    write_pairs(pairs, Path(config.out), report.contexts)
    print(report.text())
    return report

"""The report printed after a run: per file, per cleaning rule, per outcome."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .cleaning import RULES
from .model import APP_TEXT_RULES, Imported
from .scrub import KINDS

PER_CONTACT_SHOWN = 10  # the chats with the most pairs, by name; the rest as a count


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
    app_texts: Counter = field(default_factory=Counter)  # APP_TEXT_RULES -> lines the importers recognised
    skipped: list[tuple[str, str]] = field(default_factory=list)  # files in folders and archives left alone, and why
    conversations_used: int = 0
    group_chats_skipped: int = 0
    pairs: int = 0  # from conversations and JSONL
    fact_pairs: int = 0
    vocabulary: int = 0  # distinct characters in the inputs and outputs written
    pairs_per_contact: Counter = field(default_factory=Counter)  # the other person (a group's title) -> pairs of that chat
    contexts: list = field(default_factory=list)  # the chats' pairs as records, with their session's earlier turns (the first pairs written)

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
        lines += self._skipped_lines()
        lines.append("the apps' own texts (lines recognised; placeholders are then removed by the cleaning below):")
        lines += [f"  {rule:38s} {self.app_texts[rule]}" for rule in APP_TEXT_RULES if self.app_texts[rule]]
        lines.append("cleaning (messages affected):")
        lines += [f"  {rule:38s} {self.counts[rule]}" for rule in RULES]
        lines.append("private details replaced (each one, by kind):")
        lines += [f"  {'<' + kind + '>':38s} {self.counts['scrubbed ' + kind]}" for kind in KINDS]
        lines.append(f"conversations: {self.conversations_used} used, {self.group_chats_skipped} skipped as group chats"
                     + (" (--group_chats=true keeps them)" if self.group_chats_skipped else ""))
        if self.counts["messages left out by --exclude_contacts"]:
            lines.append(f"--exclude_contacts left out {self.counts['messages left out by --exclude_contacts']} message(s)")
        lines.append(f"pairs written: {self.pairs + self.fact_pairs} ({self.pairs} from chats, {self.fact_pairs} from facts)")
        if self.pairs_per_contact:
            shown = self.pairs_per_contact.most_common(PER_CONTACT_SHOWN)
            rest = len(self.pairs_per_contact) - len(shown)
            lines.append("pairs per contact: " + ", ".join(f"{name} {count}" for name, count in shown)
                         + (f", and {rest} more chat(s)" if rest else ""))
        lines.append(f"vocabulary: {self.vocabulary} distinct characters")
        return "\n".join(lines)

    def _skipped_lines(self) -> list[str]:
        """Files left alone, by reason: a photo folder of 500 files is one line, with a few names."""
        by_reason: dict[str, list[str]] = {}
        for path, reason in self.skipped:
            by_reason.setdefault(reason, []).append(Path(path).name)
        lines = []
        for reason, names in by_reason.items():
            shown = ", ".join(names[:3]) + (f", ... ({len(names) - 3} more)" if len(names) > 3 else "")
            lines.append(f"  skipped {len(names)} file(s), {reason}: {shown}")
        return lines


def file_report(path: str, imported: Imported, undecodable: int, is_me, me: str) -> FileReport:
    messages = [m for c in imported.conversations for m in c.messages]
    speakers = Counter(m.sender for m in messages if not m.sender.startswith("\x00")).most_common(5)
    report = FileReport(str(path), imported.format, len(messages) or len(imported.pairs), len(imported.conversations),
                        imported.malformed, undecodable, any(map(is_me, messages)), speakers)
    report.note = imported.note
    if messages and not report.me_found:
        shown = ", ".join(f"{name} ({count})" for name, count in speakers)
        report.note = "; ".join(filter(None, [report.note, f"--me={me!r} matches nobody here; top speakers: {shown}"]))
    return report

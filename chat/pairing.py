"""Pairs: their turn, then my reply within the window; which conversations take part."""
from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from .model import Conversation, Message
from .options import ChatDataConfig
from .report import Report
from .telegram_html import JOINED


@dataclass
class Turn:
    mine: bool
    texts: list[str]
    first: datetime | None
    last: datetime | None
    speaker: str = ""  # as the export spells it (named in a group chat's layout)


def turns_of(messages: list[Message], is_me, silence: timedelta | None = None,
             counts: Counter | None = None) -> list[Turn]:
    """Consecutive messages of one person become one turn, unless `silence` or more passed between
    them: "ok thanks" and a message sent weeks later are two turns, not one reply."""
    turns, previous_speaker = [], None
    for message in messages:
        mine = is_me(message)
        speaker = "\x00me" if mine else message.sender
        if turns and speaker == previous_speaker and _silent_for(turns[-1], message, silence):
            if counts is not None:
                counts["turns ended by --silence_hours"] += 1
            turns.append(Turn(mine, [message.text], message.time, message.time, message.sender))
        elif turns and speaker == previous_speaker:
            turns[-1].texts.append(message.text)
            turns[-1].last = message.time or turns[-1].last
        else:
            turns.append(Turn(mine, [message.text], message.time, message.time, message.sender))
        previous_speaker = speaker
    return turns


def _silent_for(turn: Turn, message: Message, silence: timedelta | None) -> bool:
    return bool(silence is not None and turn.last and message.time and message.time - turn.last >= silence)


def reply_pairs(messages: list[Message], is_me, window: timedelta, counts: Counter,
                silence: timedelta | None = None) -> list[tuple[str, str]]:
    pairs = []
    turns = turns_of(messages, is_me, silence, counts)
    for theirs, mine in zip(turns, turns[1:]):
        if not mine.mine or theirs.mine:
            continue
        if theirs.last and mine.first and mine.first - theirs.last > window:
            counts["replies outside --reply_window"] += 1
            continue
        pairs.append((" | ".join(theirs.texts), " | ".join(mine.texts)))
    return pairs


def sessions_of(messages: list[Message], gap: timedelta) -> list[list[Message]]:
    """A chat cut where `gap` or more passed without a word: each part is one conversation, and
    nothing said before the silence is context for a reply after it."""
    sessions: list[list[Message]] = []
    for message in messages:
        last = sessions[-1][-1] if sessions else None
        if last is None or (last.time and message.time and message.time - last.time >= gap):
            sessions.append([])
        sessions[-1].append(message)
    return sessions


def session_records(messages: list[Message], is_me, window: timedelta, counts: Counter, gap: timedelta,
                    silence: timedelta | None = None, group: bool = False) -> list[dict]:
    """Each reply of mine with the turns before it in its session as "context": [{"speaker", "text",
    "mine"}, ...]; the layout is made from them by training (gptlib/chat_format.py), the one layout.
    A group chat's speakers are named; a two-person chat needs no names."""
    records = []
    for number, session in enumerate(sessions_of(messages, gap)):
        turns = turns_of(session, is_me, silence, counts)
        for index, (theirs, mine) in enumerate(zip(turns, turns[1:])):
            if not mine.mine or theirs.mine:
                continue
            if theirs.last and mine.first and mine.first - theirs.last > window:
                counts["replies outside --reply_window"] += 1
                continue
            context = [{"speaker": turn.speaker if group and not turn.mine else None,
                        "text": " | ".join(turn.texts), "mine": turn.mine} for turn in turns[:index + 1]]
            records.append({"input": " | ".join(theirs.texts), "output": " | ".join(mine.texts), "context": context,
                            "session": number, "time": mine.first.isoformat() if mine.first else None,
                            "me": mine.speaker})  # as the export spells me: a hub model's persona (--persona)
    return records


def exclude_contacts(conversations: list[Conversation], names: str, report: Report, is_me) -> list[Conversation]:
    """Chats in which an excluded person speaks are dropped whole; a name nobody has is warned about."""
    wanted = {name.strip().casefold() for name in names.split(",") if name.strip()}
    if not wanted:
        return conversations
    seen, kept = set(), []
    for conversation in conversations:
        spellings = {n.casefold() for m in conversation.messages if not is_me(m) for n in (m.sender, *m.aliases) if n}
        hit = wanted & (spellings | {conversation.title.casefold()})
        seen |= hit
        if hit:
            report.counts["messages left out by --exclude_contacts"] += len(conversation.messages)
        else:
            kept.append(conversation)
    for name in sorted(wanted - seen):
        print(f"warning: --exclude_contacts: nobody called {name!r} speaks in these exports; nothing was left out for that name")
    return kept


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


def merge_conversations(conversations: list[Conversation], counts: Counter | None = None) -> list[Conversation]:
    """One chat split over several files becomes one, in time order (Messenger and iMessage list newest first).
    The same chat exported twice (a January export and a June one that repeats it, two copies of a folder)
    is one chat too: files that share a message (time, sender, text) are merged, and each message is kept
    as many times as the file that holds it most often holds it, so a repeat inside one file stays."""
    groups: list[_Merged] = []
    by_key: dict[str, _Merged] = {}
    by_message: dict[tuple, _Merged] = {}
    for conversation in conversations:
        prints = [_fingerprint(message) for message in conversation.messages]
        shared = () if conversation.keyed else prints
        group = by_key.get(conversation.key) or next((by_message[p] for p in shared if p in by_message), None)
        if group is None:
            group = _Merged(dataclasses.replace(conversation, messages=[]))
            groups.append(group)
        by_key[conversation.key] = group
        dropped = group.add(conversation.messages, prints)
        if counts is not None:
            counts["duplicate messages dropped"] += dropped
        by_message.update((p, group) for p in shared if p)
    for group in groups:
        messages = group.conversation.messages
        if all(message.time for message in messages):
            messages.sort(key=lambda message: message.time)
        elif _newest_first(messages):
            messages.reverse()
        group.conversation.messages = _with_joined_senders(messages)
    return [group.conversation for group in groups]


def _with_joined_senders(messages: list[Message]) -> list[Message]:
    """Telegram's HTML leaves out the sender of a follow-up ("joined"); it is the previous message's,
    which may be in the previous file. One with nothing before it is dropped."""
    kept = []
    for message in messages:
        if message.sender == JOINED:
            if not kept:
                continue
            message = dataclasses.replace(message, sender=kept[-1].sender, aliases=kept[-1].aliases)
        kept.append(message)
    return kept


def _fingerprint(message: Message) -> tuple | None:
    return (message.time, message.sender, message.text) if message.time else None  # untimed: never a duplicate


class _Merged:
    """A conversation gathered from files, and how many times each timed message is already in it."""

    def __init__(self, conversation: Conversation):
        self.conversation = conversation
        self.kept: Counter = Counter()

    def add(self, messages: list[Message], prints: list[tuple | None]) -> int:
        """Adds one file's messages; returns how many were already there (dropped)."""
        in_this_file, dropped = Counter(), 0
        for message, print_ in zip(messages, prints):
            if print_:
                in_this_file[print_] += 1
                if in_this_file[print_] <= self.kept[print_]:
                    dropped += 1
                    continue
                self.kept[print_] += 1
            self.conversation.messages.append(message)
        return dropped


def _newest_first(messages: list[Message]) -> bool:
    times = [message.time for message in messages if message.time]
    return len(times) > 1 and times[0] > times[-1]

"""Pairs: their turn, then my reply within the window; which conversations take part."""
from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from .model import Conversation, Message
from .options import ChatDataConfig
from .report import Report


@dataclass
class Turn:
    mine: bool
    texts: list[str]
    first: datetime | None
    last: datetime | None


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
            turns.append(Turn(mine, [message.text], message.time, message.time))
        elif turns and speaker == previous_speaker:
            turns[-1].texts.append(message.text)
            turns[-1].last = message.time or turns[-1].last
        else:
            turns.append(Turn(mine, [message.text], message.time, message.time))
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

"""How a conversation is laid out for the model: the chat markers and the one prompt layout that
training, the end-of-run sample, `--chat`, the server and the page all use.

    INPUT_MARK their words OUTPUT_MARK my reply END_MARK      (one exchange)

Control characters never occur in cleaned chat text, so the three markers cannot be confused with
anything written; byte-level tokenizers make them special ids that typed text never produces.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass

INPUT_MARK, OUTPUT_MARK, END_MARK = "\x01", "\x02", "\x03"
CHAT_MARKERS = (INPUT_MARK, OUTPUT_MARK, END_MARK)


def exchange_text(their: str, mine: str) -> str:
    """One exchange, as trained on."""
    return INPUT_MARK + their + OUTPUT_MARK + mine + END_MARK


def prompt_text(message: str, history=()) -> str:
    """What the model reads before my reply to `message`: the earlier (their, mine) exchanges of the
    conversation, then the message and the marker that opens my reply."""
    return "".join(exchange_text(their, mine) for their, mine in history) + INPUT_MARK + message + OUTPUT_MARK


def read_laid_out(their_side: str) -> tuple[str, list[tuple[str, str]]]:
    """The inverse of a conversation_prompt without its outer markers (the first side of a laid-out
    training pair, gptlib/run_data.conversation_pairs): (their message, earlier exchanges). The
    markers in it are the layout's own: the texts were cleared of them (without_markers)."""
    *earlier, message = their_side.split(INPUT_MARK)
    history = []
    for exchange in earlier:
        their, _, mine = exchange.partition(OUTPUT_MARK)
        history.append((their, mine.removesuffix(END_MARK)))
    return message, history


def named(speaker: str | None, text: str) -> str:
    """One person's turn inside their side of an exchange: in a group chat the speaker is named
    ("Ana: see you at 8"), so the model learns who said what; in a two-person chat no name is needed."""
    return f"{speaker}: {text}" if speaker else text


def their_side(turns) -> str:
    """The turns of the others between two replies of mine, as one side of an exchange: each
    (speaker, text) on its own line, consecutive messages of one speaker joined by " | " as
    chat_data.py joins them."""
    lines: list[tuple[str | None, list[str]]] = []
    for speaker, text in turns:
        if lines and lines[-1][0] == speaker:
            lines[-1][1].append(text)
        else:
            lines.append((speaker, [text]))
    return "\n".join(named(speaker, " | ".join(texts)) for speaker, texts in lines)


def recent_history(history, context_turns: int = 0) -> list:
    """The exchanges a reply is conditioned on: at most `context_turns` turns before it (their
    message counts as one, each earlier exchange as two), the oldest dropped first; 0 keeps all.
    Training and every way of replying cut the same way, so a served prompt is a trained one."""
    history = list(history)
    if context_turns <= 0:
        return history
    keep = (context_turns - 1) // 2
    return history[len(history) - keep:] if keep else []


def conversation_prompt(message: str, history=(), context_turns: int = 0) -> str:
    """THE layout of a conversation before my reply, for training, --chat, the server and the page."""
    return prompt_text(message, recent_history(history, context_turns))


def exchanges_of(turns) -> tuple[str, list[tuple[str, str]]]:
    """Turns (speaker or None, text, mine), oldest first and ending with theirs, as (their message,
    earlier (their side, my reply) exchanges): the others' turns between two of mine make one side."""
    history, pending = [], []
    for speaker, text, mine in turns:
        if not mine:
            pending.append((speaker, text))
        elif pending:
            history.append((their_side(pending), text))
            pending = []
    return their_side(pending), history


def openai_exchanges(messages: list) -> tuple[str, list[tuple[str, str]]]:
    """OpenAI chat messages (already checked by the server) as exchanges_of gives them: role user is
    the others, assistant is me, and a user message's optional `name` names its speaker as a group
    chat's turns are named in training. System messages are dropped: chats have none."""
    turns = []
    for message in messages:
        role, content, name = message.get("role"), message.get("content"), message.get("name")
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        if role in ("user", "assistant"):
            turns.append((name if role == "user" and isinstance(name, str) and name.strip() else None, content,
                          role == "assistant"))
    return exchanges_of(turns)


def persona_prompt(persona: str) -> str:
    """The system prompt for a model with a chat template: I am the assistant, the others the user."""
    return f"You are {persona}. Reply to the chat as {persona} would, in {persona}'s own words and style."


def prompt_ids(vocab, message: str, history=()) -> list[int]:
    """prompt_text in a byte-level vocabulary's ids: the markers as their special ids, the words as
    text, so a marker typed inside a message stays text and can never forge a turn."""
    ids = []
    for their, mine in history:
        ids += _marker(vocab, INPUT_MARK) + vocab.encode(their) + _marker(vocab, OUTPUT_MARK)
        ids += vocab.encode(mine) + _marker(vocab, END_MARK)
    return ids + _marker(vocab, INPUT_MARK) + vocab.encode(message) + _marker(vocab, OUTPUT_MARK)


def _marker(vocab, mark: str) -> list[int]:
    return [vocab.specials[mark]]


def layout_pair(their: str, mine: str) -> tuple[str, list[bool]]:
    """One pair as text, and for each character whether the model learns to predict it: only my
    reply and the end marker (so it learns to stop), never their words or the markers it is given."""
    text = exchange_text(their, mine)
    learned = [False] * (len(their) + 2) + [True] * (len(mine) + 1)
    return text, learned


def without_markers(text: str) -> str:
    for mark in CHAT_MARKERS:
        text = text.replace(mark, " ")
    return text


# ----------------------------------------------------------------------------------------------
# A typed message in the characters a character model knows


# Typographic stand-ins that Unicode decomposition does not map to their plain ASCII forms.
PLAIN_FORMS = {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-",
               "\u2212": "-", "\t": " "}


@dataclass
class FittedText:
    """Text made of characters a model knows: close ones stand in where they exist, others are left out."""
    text: str
    dropped: list[str]  # characters left out, sorted
    replaced: dict[str, str]  # character given -> the close character the model read instead


def close_character(ch: str, known) -> str | None:
    """A character of `known` that says nearly the same as `ch`: the same letter without its accent
    (é -> e, full-width Ａ -> A), in the other case when the model saw only one case, or the plain form
    of a typographic quote or dash. None when there is none: a guess would put words in the user's mouth."""
    decomposed = unicodedata.normalize("NFKD", ch)
    base = decomposed[0] if decomposed and all(unicodedata.combining(c) for c in decomposed[1:]) else ""
    for candidate in (PLAIN_FORMS.get(ch, ""), base, ch.lower(), ch.upper(), base.lower(), base.upper()):
        if len(candidate) == 1 and candidate != ch and candidate in known:
            return candidate
    return None




def fit_to_vocabulary(text: str, vocab) -> FittedText:
    """`text` in characters `vocab` knows, never refused: a close character stands in where there is
    one (café -> cafe), the rest are left out; both are reported. The chat markers are layout, never
    text, so a message cannot forge a turn with them. Byte-level vocabularies know every character."""
    if vocab.kind != "char":  # bytes: every character is known; only the markers go
        return FittedText("".join(ch for ch in text if ch not in CHAT_MARKERS), sorted(set(text) & set(CHAT_MARKERS)), {})
    known = vocab.index.keys() - set(CHAT_MARKERS)
    out, dropped, replaced = [], set(), {}
    for ch in text:
        if ch in known:
            out.append(ch)
        elif (close := replaced.get(ch) or close_character(ch, known)) is not None:
            replaced[ch] = close
            out.append(close)
        else:
            dropped.add(ch)
    return FittedText("".join(out), sorted(dropped), replaced)

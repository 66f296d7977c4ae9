"""How replies read, measured on text alone: the style card (real replies against generated ones),
the failures a generated reply can show, and word-for-word copies of training replies.

    card = style_card(real_replies)                      # numbers only: lengths, rates, shares
    failures = failure_counts(replies, others=["Rui"])  # empty, loops, overlong, markup, someone else
    copies = copied_replies(generated, training, words=8)

Nothing here returns message text unless asked (`show_text`): the report built on it is numbers,
so it can be kept, shared or logged without the chats it was measured on.
"""
from __future__ import annotations

import re
import statistics
import unicodedata
from collections import Counter

from gptlib.chat_format import CHAT_MARKERS

JOINED_TURNS = " | "  # chat_data.py joins consecutive messages of one person with this
WORD = re.compile(r"\w+(?:'\w+)*")
TOP_WORDS = 10  # the most frequent words and emoji compared between real and generated replies
LOOP_NGRAM = 3  # a reply loops when a run of this many words comes back LOOP_REPEATS times or more
LOOP_REPEATS = 3
LOOP_CHARS = 12  # ... or a stretch of this many characters repeats back to back 3 times (no spaces needed)
COPY_WORDS = 8  # a generated reply is a copy when it repeats this many training-reply words in a row
# Text a reply should never contain: our markers, and the role tokens of common chat templates.
MARKUP = (*CHAT_MARKERS, "<|im_start|>", "<|im_end|>", "<|eot_id|>", "<|start_header_id|>", "<|endoftext|>",
          "[INST]", "[/INST]", "<s>", "</s>", "<|user|>", "<|assistant|>")
ROLE_LINE = re.compile(r"^\s*(user|assistant|system)\s*:", re.IGNORECASE | re.MULTILINE)


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def is_emoji(ch: str) -> bool:
    """A pictograph (the Symbol, other category, or the emoji planes); skin tones and joiners are not counted."""
    return 0x1F000 <= ord(ch) <= 0x1FAFF or (unicodedata.category(ch) == "So" and ord(ch) > 0x2000)


def is_punctuation(ch: str) -> bool:
    return unicodedata.category(ch).startswith("P")


# ----------------------------------------------------------------------------------------------
# The style card


def style_card(replies: list[str]) -> dict:
    """Numbers that describe how a list of replies reads; comparable between two lists of any length."""
    n = max(1, len(replies))
    chars = [len(r) for r in replies] or [0]
    counts = [len(words(r)) for r in replies] or [0]
    lettered = [r for r in replies if any(ch.isalpha() for ch in r)]
    total_chars = max(1, sum(chars))
    return {
        "replies": len(replies),
        "mean_chars": sum(chars) / n,
        "median_chars": float(statistics.median(chars)),
        "mean_words": sum(counts) / n,
        "turns_joined": sum(r.count(JOINED_TURNS) + 1 for r in replies) / n,  # messages sent in a row as one reply
        "lower_case_share": sum(r == r.lower() for r in lettered) / max(1, len(lettered)),
        "emoji_per_reply": sum(is_emoji(ch) for r in replies for ch in r) / n,
        "punctuation_per_100_chars": 100 * sum(is_punctuation(ch) for r in replies for ch in r) / total_chars,
        "question_share": sum("?" in r for r in replies) / n,
    }


def frequent(replies: list[str], top: int = TOP_WORDS) -> dict[str, list[tuple[str, int]]]:
    """The most frequent words and emoji, with their counts (message text: only with --show_text)."""
    return {"words": Counter(w for r in replies for w in words(r)).most_common(top),
            "emoji": Counter(ch for r in replies for ch in r if is_emoji(ch)).most_common(top)}


def vocabulary_overlap(real: list[str], generated: list[str], top: int = TOP_WORDS) -> dict:
    """How much of one vocabulary the other shares: numbers, never the words themselves."""
    real_words, made_words = Counter(w for r in real for w in words(r)), Counter(w for r in generated for w in words(r))
    shared = real_words.keys() & made_words.keys()
    top_real = {w for w, _ in real_words.most_common(top)}
    top_made = {w for w, _ in made_words.most_common(top)}
    return {
        "jaccard": len(shared) / max(1, len(real_words.keys() | made_words.keys())),
        # the share of the generated words (with repeats) that the real replies also use
        "generated_words_in_real_vocabulary": sum(made_words[w] for w in shared) / max(1, sum(made_words.values())),
        "shared_top_words": len(top_real & top_made), "top": top,
    }


CARD_ROWS = (  # (key, label, format) of the style card's table
    ("mean_chars", "length, characters (mean)", "{:.1f}"),
    ("median_chars", "length, characters (median)", "{:.0f}"),
    ("mean_words", "length, words (mean)", "{:.1f}"),
    ("turns_joined", "messages per reply (turns joined)", "{:.2f}"),
    ("lower_case_share", "all lower case (share)", "{:.0%}"),
    ("emoji_per_reply", "emoji per reply", "{:.2f}"),
    ("punctuation_per_100_chars", "punctuation (per 100 characters)", "{:.1f}"),
    ("question_share", "questions (share)", "{:.0%}"),
)


def card_table(real: dict, generated: dict) -> list[tuple[str, str, str]]:
    """The style card as rows (what, real, generated), formatted."""
    return [(label, fmt.format(real[key]), fmt.format(generated[key])) for key, label, fmt in CARD_ROWS]


# ----------------------------------------------------------------------------------------------
# Failures


def loops(text: str) -> bool:
    """A reply that goes round: a run of LOOP_NGRAM words said LOOP_REPEATS times or more, or a
    stretch of characters repeated back to back (a character model's "so so so so" without spaces)."""
    said = words(text)
    runs = Counter(tuple(said[i:i + LOOP_NGRAM]) for i in range(len(said) - LOOP_NGRAM + 1))
    if runs and max(runs.values()) >= LOOP_REPEATS:
        return True
    return re.search(r"(.{%d,60}?)\1\1" % LOOP_CHARS, text, re.DOTALL) is not None


def has_markup(text: str) -> bool:
    """Template or marker text inside a reply: a chat marker, a role token, or a "user:" line."""
    return any(mark in text for mark in MARKUP) or ROLE_LINE.search(text) is not None


def speaks_as(text: str, others) -> bool:
    """The reply writes a line as one of the other speakers ("Rui Costa: ..." or "Rui: ...")."""
    names = {name.strip() for other in others if other for name in (other, other.split()[0])}
    return any(re.search(rf"(^|\n)\s*{re.escape(name)}\s*:", text) for name in names if name)


FAILURES = ("empty", "loop", "overlong", "markup", "speaks_as_other")


def failures_of(text: str, others=(), longest: int = 0, cut_off: bool = False) -> set[str]:
    """Which failures a reply shows. `longest`: the longest reply the person wrote in training (a reply
    past it, or one cut off at the generation cap, is overlong)."""
    found = set()
    if not text.strip():
        found.add("empty")
    if loops(text):
        found.add("loop")
    if cut_off or (longest and len(text) > longest):
        found.add("overlong")
    if has_markup(text):
        found.add("markup")
    if speaks_as(text, others):
        found.add("speaks_as_other")
    return found


def failure_counts(replies: list[str], others=(), longest: int = 0, cut_off=None) -> dict[str, int]:
    """How many replies show each failure, and "any" (cut_off: for each reply, whether it hit the generation cap)."""
    cut_off = cut_off or [False] * len(replies)
    counts = dict.fromkeys((*FAILURES, "any"), 0)
    for text, cut in zip(replies, cut_off):
        found = failures_of(text, others, longest, cut)
        for failure in found:
            counts[failure] += 1
        counts["any"] += bool(found)
    return counts


# ----------------------------------------------------------------------------------------------
# Memorisation: word-for-word copies of training replies


def copied_replies(replies: list[str], training: list[str], min_words: int = COPY_WORDS,
                   show_text: bool = False, worst: int = 5) -> dict:
    """Replies that repeat at least `min_words` words in a row of some training reply. The worst
    examples (longest copied run first) are given by their lengths only; their text with show_text."""
    index: dict[tuple, list[int]] = {}
    training_words = [words(t) for t in training]
    for number, said in enumerate(training_words):
        for i in range(len(said) - min_words + 1):
            index.setdefault(tuple(said[i:i + min_words]), []).append(number)
    found = []
    for number, reply in enumerate(replies):
        said = words(reply)
        sources = {s for i in range(len(said) - min_words + 1) for s in index.get(tuple(said[i:i + min_words]), ())}
        if sources:
            run = max(longest_common_run(said, training_words[s]) for s in sources)
            found.append({"reply": number, "copied_words": run, "reply_words": len(said), "reply_chars": len(reply),
                          **({"text": reply} if show_text else {})})
    found.sort(key=lambda f: (-f["copied_words"], f["reply"]))
    return {"min_words": min_words, "copies": len(found), "replies": len(replies),
            "share": len(found) / max(1, len(replies)), "worst": found[:worst]}


def longest_common_run(a: list[str], b: list[str]) -> int:
    """The most words in a row that a and b share (dynamic programming over both)."""
    best, previous = 0, [0] * (len(b) + 1)
    for x in a:
        current = [0] * (len(b) + 1)
        for j, y in enumerate(b, 1):
            if x == y:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best


def redacted(text: str) -> str:
    """A reply as the report shows it without --show_text: its length, never its words."""
    return f"[{len(text)} characters, {len(words(text))} words]"

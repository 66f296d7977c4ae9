"""Property-based tests (hypothesis): the override parser and the tokenizer on arbitrary input."""
import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from config import GPTConfig, SampleConfig, TrainConfig
from gptlib.cli import parse_args
from gptlib.corpus import CharVocab, compact_dtype
from gptlib.errors import UserError

SECTIONS = [GPTConfig, TrainConfig]
FIELDS = {f.name: f.type for section in SECTIONS for f in dataclasses.fields(section)}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=30), max_size=5))
def test_the_parser_either_parses_or_raises_a_user_error(argv):
    try:
        args = parse_args(argv, SECTIONS)
    except UserError as err:
        assert str(err)  # a message, never an empty one
        return
    for name, value in args.overrides.items():
        assert name in FIELDS
        assert type(value).__name__ == FIELDS[name].replace("str | None", "str")


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(sorted(FIELDS)), st.integers(-10**6, 10**6))
def test_integers_round_trip_through_the_parser(name, number):
    kind = FIELDS[name]
    if kind not in ("int", "float"):
        return
    value = parse_args([f"--{name}={number}"], SECTIONS).overrides[name]
    assert value == number


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=200))
def test_prompts_survive_the_parser_unchanged_except_escaped_newlines(text):
    if "\\" in text:
        return
    assert parse_args([f"--prompt={text}"], [SampleConfig]).overrides["prompt"] == text


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=500))
def test_encode_then_decode_gives_back_any_text_in_the_vocabulary(text):
    vocab = CharVocab.from_text(text)
    ids = vocab.encode(text)
    assert vocab.decode(ids) == text
    assert all(0 <= i < len(vocab) for i in ids)
    assert vocab.chars == sorted(set(text))
    fast = vocab.encode_to_tensor(text, slice_chars=7)  # the table path, several slices
    assert fast.tolist() == ids and fast.dtype == compact_dtype(len(vocab))


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=50), st.text(min_size=1, max_size=50))
def test_characters_outside_the_vocabulary_are_named(known, other):
    vocab = CharVocab.from_text(known)
    missing = set(other) - set(known)
    try:
        vocab.encode(other)
    except UserError as err:
        assert missing and all(repr(ch) in str(err) for ch in sorted(missing)[:10])
    else:
        assert not missing

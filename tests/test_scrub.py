"""Private details out of the pairs: the invented chat's details in the world's formats, numbers
never seen (every country's example numbers, random card numbers), ordinary numbers left alone,
nothing the earlier hand-written rules caught let through, --redact, and no text in the report."""
import json
import random
import string
import sys
from collections import Counter
from pathlib import Path

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stdnum import luhn

from benchmarks.privacy import FIXTURES, load, measure, messages, old_clean, whatsapp_chat
from chat.cleaning import Cleaner
from chat.options import ChatDataConfig
from chat.pipeline import build_pairs, main
from chat.scrub import Scrubber
from gptlib.errors import UserError

CHAT = FIXTURES / "private_whatsapp.txt"
REDACT = FIXTURES / "redact.txt"


def scrub(text: str, region: str = "", **options) -> str:
    return Cleaner(ChatDataConfig(me="x", region=region, **options), Counter()).clean(text)


def pairs_text(**options) -> str:
    pairs, _ = build_pairs([CHAT], ChatDataConfig(me="Ana Silva", **options))
    return json.dumps(pairs, ensure_ascii=False)


def test_the_invented_chat_is_the_one_made_from_the_catalogue():
    assert CHAT.read_text(encoding="utf-8") == whatsapp_chat(load())


def test_every_detail_of_the_invented_chat_is_scrubbed_by_default_or_with_redact():
    default, redacted = pairs_text(), pairs_text(redact_file=str(REDACT))
    for kind, what, detail, needs in load()["details"]:
        assert detail not in redacted, (kind, what)
        if needs == "default":
            assert detail not in default, (kind, what)
    for placeholder in ("<phone>", "<iban>", "<card>", "<email>", "<id>", "<ip>", "<password>"):
        assert placeholder in default
    assert "<redacted>" in redacted and "<redacted>" not in default


def test_the_typed_placeholder_says_what_was_there():
    for (kind, what, _, _), message in messages(load()):
        if kind in ("phone", "iban", "card", "email", "ip") and "," not in what:
            assert f"<{kind}>" in scrub(message), (what, scrub(message))


def test_ordinary_numbers_are_left_alone():
    for text in load()["ordinary"]:
        assert scrub(text) == text
        assert scrub(text, region="US") == text and scrub(text, region="JP") == text


def test_the_measured_table_holds():
    """The figures of docs/llm-of-yourself.md (python -m benchmarks.privacy)."""
    result = measure()
    caught = Counter()
    for row in result["kinds"].values():
        caught.update(row)
    assert (caught["total"], caught["before"], caught["after"], caught["redact"]) == (85, 52, 80, 85)
    assert result["changed_after"] == []


@pytest.mark.parametrize("region", sorted(phonenumbers.SUPPORTED_REGIONS))
def test_every_countrys_example_numbers_are_scrubbed(region):
    """Numbers never seen: phonenumbers' examples for each of its 245 regions, mobile and fixed line.
    International and E.164 forms need no hint; the national form needs --region (measured without
    one in docs/llm-of-yourself.md: 451 of 489)."""
    hinted, plain = Scrubber(region, [], Counter()), Scrubber("", [], Counter())
    for kind in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE):
        number = phonenumbers.example_number_for_type(region, kind)
        if number is None:
            continue
        for form in (phonenumbers.PhoneNumberFormat.INTERNATIONAL, phonenumbers.PhoneNumberFormat.E164):
            written = phonenumbers.format_number(number, form)
            assert plain(f"call me on {written} tomorrow") == "call me on <phone> tomorrow", written
        national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
        assert not any(char.isdigit() for char in hinted(f"call me on {national} tomorrow")), national


def luhn_number(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    return body + luhn.calc_check_digit(body)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), prefix=st.sampled_from(["4", "51", "55", "34", "37", "6011", "35"]),
       length=st.sampled_from([15, 16]), separator=st.sampled_from(["", " ", "-"]))
def test_card_numbers_never_seen_are_scrubbed(seed, prefix, length, separator):
    number = luhn_number(prefix, length, random.Random(seed))
    written = separator.join(number[i:i + 4] for i in range(0, len(number), 4))
    assert scrub(f"my card is {written}, thanks") == "my card is <card>, thanks"


OLD_SHAPES = st.lists(st.sampled_from(list(string.digits * 3) + [" ", "-", ".", "(", ")", "+", "/", ",", ":", "@", "a", "x "]),
                      min_size=1, max_size=30).map("".join)


@settings(max_examples=200, deadline=None)
@given(text=st.builds(lambda a, b, c: f"{a} {b} {c}", OLD_SHAPES, OLD_SHAPES, st.sampled_from(["", "ana@example.com", "ok"])))
def test_nothing_the_earlier_rules_scrubbed_is_let_through(text):
    """Where version 0.9.0's rules replaced a run of digits, no 3 digits of that run remain."""
    before, after = old_clean(text), scrub(text, lowercase=False, squeeze_repeats=False)
    if before == text:
        return
    digits_before = "".join(char for char in before if char.isdigit())
    digits_after = "".join(char for char in after if char.isdigit())
    assert len(digits_after) <= len(digits_before), (text, before, after)
    assert ("@" in after) <= ("@" in before), (text, before, after)


def test_redact_masks_or_drops_terms_and_regular_expressions(tmp_path):
    terms = tmp_path / "terms.txt"
    terms.write_text("# streets\nRua das Flores 123\nre:gato#\\d+\n", encoding="utf-8")
    text = "come to rua das  Flores 123, wifi gato#42 ok"
    assert scrub(text, redact_file=str(terms)) == "come to <redacted>, wifi <redacted> ok"
    assert scrub("ask Carla Mendes, not Carla", redact="Carla Mendes") == "ask <redacted>, not Carla"
    assert scrub("Carlas", redact="Carla") == "Carlas"  # whole words only
    assert scrub(text, redact_file=str(terms), redact_drop=True) == ""
    assert scrub("mail a@b.com", redact="x", scrub_private=False) == "mail a@b.com"
    counts = Counter()
    Cleaner(ChatDataConfig(me="x", redact="Carla", redact_drop=True), counts).clean("Carla says hi")
    assert counts["messages dropped by --redact"] == 1


def test_bad_redact_file_region_and_pattern_are_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="redact_file"):
        scrub("x", redact_file=str(tmp_path / "missing.txt"))
    with pytest.raises(UserError, match="term 2: not a regular expression") as err:
        scrub("x", redact="fine,re:secret(")
    assert "secret" not in str(err.value)  # a redacted term is private: the message gives its place, not its text
    with pytest.raises(UserError, match="--region='XX'"):
        scrub("x", region="XX")


def test_without_the_libraries_the_message_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "phonenumbers", None)
    with pytest.raises(UserError, match="requirements-chat.txt") as err:
        scrub("x")
    assert "--scrub_private=false" in str(err.value)
    assert scrub("call 912 345 678", scrub_private=False) == "call 912 345 678"


def test_the_report_counts_each_kind_and_holds_no_text(tmp_path, capsys):
    out = tmp_path / "pairs.jsonl"
    main([str(CHAT), "--me=Ana Silva", f"--out={out}", f"--redact_file={REDACT}"])
    report = capsys.readouterr().out
    assert "<phone>" in report and "<iban>                                 8" in report
    written = out.read_text(encoding="utf-8")
    for _, what, detail, _ in load()["details"]:
        assert detail not in report and detail not in written, what
    for line in CHAT.read_text(encoding="utf-8").splitlines():
        assert line.split(": ", 1)[1] not in report


def test_the_core_never_imports_the_scrubbing_libraries():
    import subprocess
    code = ("import sys, gpt_final_version, model_handler, gptlib.train, serving.server\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('phonenumbers', 'stdnum')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                            text=True, timeout=120)
    assert result.stdout.strip() == "[]", result.stderr

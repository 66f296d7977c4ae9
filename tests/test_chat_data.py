"""chat_data.py: every export format into exact pairs, each cleaning rule, the reply window, the report,
and that no input (arbitrary bytes, broken JSON) raises anything but a one-line UserError."""
import json
import subprocess
import sys
import zipfile
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import chat.whatsapp
from chat.cleaning import Cleaner
from chat.detect import JSON_READERS, TEXT_READERS, parse_export, read_export
from chat.facts import fact_pairs
from chat.files import decode
from chat.imessage import read_imessage_text
from chat.meta import fix_mojibake
from chat.model import Conversation, Message, me_matcher
from chat.options import ChatDataConfig
from chat.pairing import merge_conversations, reply_pairs, select_conversations
from chat.pipeline import build_pairs, main
from chat.report import Report
from chat.whatsapp import read_whatsapp
from gptlib.errors import UserError

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "chats"
CONTROL = set(map(chr, [*range(0x09), *range(0x0B, 0x20)]))


def make_config(**options) -> ChatDataConfig:
    options.setdefault("me", "Ana Silva")
    return ChatDataConfig(**options)


def pairs_from(*names: str, **options) -> list[tuple[str, str]]:
    pairs, _ = build_pairs([FIXTURES / name for name in names], make_config(**options))
    return pairs


def read_fixture(name: str, **options):
    imported, _ = read_export(FIXTURES / name, make_config(**options))
    return imported


def messages_of(name: str, **options) -> list[Message]:
    return [m for c in read_fixture(name, **options).conversations for m in c.messages]


def clean(text: str, **options) -> tuple[str, Counter]:
    counts = Counter()
    return Cleaner(make_config(**options), counts).clean(text), counts


# ----------------------------------------------------------------------------------------------
# WhatsApp


def test_whatsapp_android_pairs_line_by_line():
    assert pairs_from("whatsapp_android.txt") == [
        ("Hey Ana! Are you coming tonight? | The party starts at 10", "Yes!! Wouldn't miss it | Bringing cake"),
        ("Look at this place\nit's huge", "Wooow"),  # the photo before it is dropped, "Woooooow" squeezed
    ]  # the new-year reply came 3h40 later: outside the 30-minute window


def test_whatsapp_android_messages_times_and_system_lines():
    imported = read_fixture("whatsapp_android.txt")
    assert imported.format == "whatsapp" and imported.malformed == 0
    messages = messages_of("whatsapp_android.txt")
    assert Counter(m.sender for m in messages) == {"Bruno": 6, "Ana Silva": 4}  # no encryption notice, no number change
    assert messages[0].time == datetime(2023, 12, 31, 21, 41)
    assert messages[-1].time == datetime(2024, 1, 2, 8, 0)
    assert "Look at this place\nit's huge" in [m.text for m in messages]


def test_whatsapp_ios_pairs_line_by_line():
    assert pairs_from("whatsapp_ios.txt") == [
        ("Olá Ana, tudo bem?", "Tudo ótimo! E contigo?"),
        ("Olha isto", "Que giro!\nOnde é?"),  # "image omitted" and "<attached: ...>" are not words
        ("Feliz ano novo 🎉🎉", "Igualmente 😘"),
    ]


def test_whatsapp_ios_left_to_right_marks_and_notices_are_gone():
    messages = messages_of("whatsapp_ios.txt")
    assert Counter(m.sender for m in messages) == {"Bruno": 5, "Ana Silva": 4}
    assert not any("\u200e" in m.text or "encrypted" in m.text for m in messages)
    assert messages[0].time == datetime(2023, 12, 31, 21, 41, 5)  # day-first: 31 cannot be a month
    assert messages[-1].time == datetime(2024, 1, 1, 0, 6)


def test_whatsapp_ios_12_hour_clock_with_narrow_no_break_space():
    times = [m.time for m in messages_of("whatsapp_ios_12h.txt")]
    assert times == [datetime(2024, 1, 5, 21, 41, 5), datetime(2024, 1, 5, 21, 59), datetime(2024, 1, 6, 10, 0),
                     datetime(2024, 1, 6, 10, 1)]
    assert pairs_from("whatsapp_ios_12h.txt") == [("Are you free on Saturday?", "I think so"),
                                                  ("Great, lunch at noon?", "Perfect")]


def test_whatsapp_spanish_p_m_and_a_m():
    times = [m.time for m in messages_of("whatsapp_android_es.txt")]
    assert times == [datetime(2023, 12, 31, 21, 41), datetime(2023, 12, 31, 21, 55), datetime(2024, 1, 1, 0, 5),
                     datetime(2024, 1, 1, 0, 7)]  # 12:05 a. m. is five past midnight
    assert pairs_from("whatsapp_android_es.txt") == [("¿Vienes a la cena?", "¡Claro que sí!"),
                                                     ("¡Feliz año!", "¡Igualmente!")]


def test_whatsapp_year_first_and_dotted_dates():
    assert [m.time for m in messages_of("whatsapp_year_first.txt")] == [datetime(2024, 3, 1, 18, 0),
                                                                        datetime(2024, 3, 1, 18, 10)]
    assert [m.time for m in messages_of("whatsapp_dotted.txt")] == [datetime(2024, 3, 13, 18, 0),
                                                                    datetime(2024, 3, 13, 18, 2)]


def test_whatsapp_day_or_month_first_is_decided_from_the_whole_file():
    order = chat.whatsapp.date_order
    assert order([("31", "12", "23")], False) == "dmy"
    assert order([("12", "31", "23")], True) == "mdy"
    assert order([("2024", "01", "02")], False) == "ymd"
    # Every number fits both ways: the order under which the dates run forward wins.
    assert order([("2", "1", "24"), ("1", "2", "24")], True) == "dmy"  # 2 Jan, 1 Feb (not Feb 1, Jan 2)
    assert order([("1", "2", "24"), ("2", "1", "24")], False) == "mdy"  # Jan 2, Feb 1 (not 1 Feb, 2 Jan)
    assert order([("1", "2", "24")], True) == "mdy" and order([("1", "2", "24")], False) == "dmy"  # a tie: the clock


@pytest.mark.parametrize("name, when, second", [
    ("whatsapp_fi.txt", datetime(2018, 6, 13, 21, 25, 15), datetime(2018, 6, 13, 21, 26, 2)),  # "klo", dotted time
    ("whatsapp_colon.txt", datetime(2018, 6, 13, 21, 25, 15), datetime(2018, 6, 13, 21, 27)),  # "...: Name: text"
    ("whatsapp_hr.txt", datetime(2018, 6, 13, 21, 25, 15), datetime(2018, 6, 13, 21, 26, 15)),  # "13. 6. 2018. "
    ("whatsapp_ymd_dot.txt", datetime(2022, 12, 14, 13, 34), datetime(2022, 12, 14, 13, 35)),  # "13:34. - "
    ("whatsapp_ko.txt", datetime(2024, 1, 2, 21, 41), datetime(2024, 1, 2, 21, 43)),  # "2024. 1. 2. 오후 9:41 - "
    ("whatsapp_zh.txt", datetime(2024, 1, 2, 21, 41), datetime(2024, 1, 2, 21, 45))])  # "2024/1/2 下午9:41 - "
def test_whatsapp_headers_of_other_locales(name, when, second):
    imported = read_fixture(name)
    assert imported.format == "whatsapp"
    assert [m.time for m in messages_of(name)] == [when, second]
    assert len(pairs_from(name)) == 1


def test_a_header_that_does_not_parse_is_malformed_never_text():
    imported = read_fixture("whatsapp_ymd_dot.txt")  # "2022/12/14, 13:3?. - ..." on the last line
    assert imported.malformed == 1 and "broken" not in messages_of("whatsapp_ymd_dot.txt")[-1].text
    german = read_fixture("whatsapp_android_de.txt")  # ends with a timestamp cut off: "14.03.25, 09:1"
    assert german.malformed == 1 and messages_of("whatsapp_android_de.txt")[-1].text == "Tschüss"


def test_text_that_looks_like_whatsapp_is_refused_as_whatsapp():
    with pytest.raises(UserError, match="looks like a WhatsApp export") as caught:
        parse_export("[2023-12-31, 21:41:05,120] Bruno: hi\n[2023-12-31, 21:42:00,000] Ana: ok\n", "x.txt", make_config())
    assert "--columns" not in str(caught.value) and "JSON" not in str(caught.value)


def test_day_month_order_left_open_by_the_file_gets_a_note_and_an_option():
    assert "--date_order=mdy" in read_fixture("whatsapp_ios_pt.txt").note  # 02/04/2025 could be 4 February
    assert messages_of("whatsapp_ios_pt.txt")[0].time == datetime(2025, 4, 2, 10, 1)
    assert messages_of("whatsapp_ios_pt.txt", date_order="mdy")[0].time == datetime(2025, 2, 4, 10, 1)
    assert read_fixture("whatsapp_ios_pt.txt", date_order="dmy").note == ""
    assert read_fixture("whatsapp_android_de.txt").note == ""  # 14.03: day first, nothing to ask
    with pytest.raises(UserError, match="date_order"):
        make_config(date_order="dym").validate()


def test_whatsapp_android_in_german_drops_the_apps_own_texts():
    imported = read_fixture("whatsapp_android_de.txt")
    assert dict(imported.counts) == {"system lines (no sender)": 2, "media placeholders (any language)": 1,
                                     "edit markers": 1, "attached-file lines": 1, "deleted notices": 2}
    assert Counter(m.sender for m in messages_of("whatsapp_android_de.txt")) == {"Jonas Weber": 5, "Ana Silva": 4}
    assert pairs_from("whatsapp_android_de.txt") == [("Guten Morgen! Kommst du heute?", "Ja, um zehn"),
                                                     ("Schau mal", "Schön!"), ("Bis dann", "Tschüss")]


def test_whatsapp_ios_marks_its_own_texts_in_any_language():
    imported = read_fixture("whatsapp_ios_pt.txt")
    assert dict(imported.counts) == {"encryption notices": 1, "media placeholders (any language)": 1,
                                     "edit markers": 1, "deleted notices": 2, "marked as the app's own (U+200E)": 1}
    assert "Pominięto obraz" not in [m.text for m in messages_of("whatsapp_ios_pt.txt")]  # Polish, on no list
    assert pairs_from("whatsapp_ios_pt.txt") == [("Bom dia, Ana!", "Bom dia! Que foto linda"),
                                                 ("Almoçamos amanhã?", "Combinado")]


@pytest.mark.parametrize("line, kept", [
    ("1/2/24, 10:00 - Bruno: Papa heeft Mam toegevoegd", False), ("1/2/24, 10:00 - Bruno: <Mídia oculta>", False),
    ("1/2/24, 10:00 - Bruno: Bild weggelassen", False), ("1/2/24, 10:00 - Bruno: Se eliminó este mensaje", False),
    ("1/2/24, 10:00 - Bruno: Arthur hat das Gruppenbild geändert.", False),
    ("1/2/24, 10:00 - Bruno: I <3 you", True), ("1/2/24, 10:00 - Bruno: Mensagem apagada? não!", True)])
def test_whatsapp_app_texts_in_other_languages(line, kept):
    cleaned = [m for m in messages_of_text(line + "\n1/2/24, 10:01 - Ana Silva: ok\n") if m.sender == "Bruno"]
    text = Cleaner(make_config(), Counter()).clean(cleaned[0].text) if cleaned else ""
    assert bool(text) == kept


def messages_of_text(text: str) -> list[Message]:
    return [m for c in parse_export(text, "chat.txt", make_config()).conversations for m in c.messages]


def test_group_chats_are_skipped_unless_asked():
    with pytest.raises(UserError, match="group chat"):
        pairs_from("whatsapp_group.txt")
    assert pairs_from("whatsapp_group.txt", group_chats=True) == [("Not me", "I'll drive")]
    speakers = Counter(m.sender for m in messages_of("whatsapp_group.txt"))
    assert speakers == {"Bruno": 1, "Carla": 1, "Ana Silva": 1}  # "created group", "added", "joined" are nobody's


def test_whatsapp_malformed_lines_and_impossible_dates_are_skipped(tmp_path):
    path = tmp_path / "chat.txt"
    path.write_text("text before any message\n12/31/23, 9:41 PM - Bruno: hi\n12/32/23, 9:42 PM - Bruno: x\n"
                    "12/31/23, 9:43 PM - Ana Silva: hello\n", encoding="utf-8")
    imported, _ = read_export(path, make_config())
    assert imported.malformed == 2
    assert build_pairs([path], make_config())[0] == [("hi", "hello")]


# ----------------------------------------------------------------------------------------------
# Telegram, Messenger, iMessage, Discord, CSV, JSONL


def test_telegram_single_chat_entities_service_and_media():
    imported = read_fixture("telegram_chat.json")
    assert imported.format == "telegram" and imported.malformed == 2  # a bare string, a number as text
    assert pairs_from("telegram_chat.json") == [("Check this out: link", "Nice one"), ("Sent you a pic", "Got it")]
    times = [m.time for m in messages_of("telegram_chat.json")]
    assert datetime(2024, 1, 2, 21, 10) in times  # from date_unixtime alone


def test_telegram_whole_account_export():
    imported = read_fixture("telegram_account.json")
    assert [c.title for c in imported.conversations] == ["Bruno", "Carla", "Family"]
    pairs, report = build_pairs([FIXTURES / "telegram_account.json"], make_config())
    assert pairs == [("Morning!", "Morning :)"), ("Lunch?", "Yes, 1pm")]
    assert report.group_chats_skipped == 1


def test_messenger_mojibake_newest_first_reaction_and_photo():
    imported = read_fixture("messenger_message_1.json")
    assert imported.format == "messenger" and imported.malformed == 1
    assert pairs_from("messenger_message_1.json") == [("Vamos ao café amanhã?", "Sim, às 10h 😊")]
    assert fix_mojibake("caf\u00c3\u00a9") == "café"
    assert fix_mojibake("café") == "café"  # already right: left alone


def test_imessage_csv_newest_first_with_tapback():
    imported = read_fixture("imessage.csv")
    assert imported.format == "imessage-csv" and imported.malformed == 1  # the row without a time
    assert pairs_from("imessage.csv", me="Me") == [("Hey | Dinner tomorrow at 8?", "Sounds good")]


def test_imessage_csv_names_and_handles_are_one_person():
    """Their rows name Carla in Sender or only by handle; mine name her in To, by name or handle."""
    imported = read_fixture("imessage_mixed.csv")
    (conversation,) = imported.conversations
    assert conversation.title == "Carla Mendes" and not conversation.is_group()
    assert Counter(m.sender for m in conversation.messages) == {"Me": 2, "Carla Mendes": 2}
    assert pairs_from("imessage_mixed.csv", me="Me") == [("Concert tonight?", "Sure! What time?"),
                                                         ("Bring the tickets", "See you there")]


def test_imessage_csv_with_contact_identifier_instead_of_to(tmp_path):
    csv_file = tmp_path / "messages.csv"
    csv_file.write_text((FIXTURES / "imessage_mixed.csv").read_text(encoding="utf-8").replace(",To\n", ",Contact Identifier\n"),
                        encoding="utf-8")
    assert build_pairs([csv_file], make_config(me="Me"))[0] == pairs_from("imessage_mixed.csv", me="Me")


def test_imessage_exporter_text():
    assert read_fixture("imessage_export.txt").format == "imessage-text"
    assert pairs_from("imessage_export.txt", me="Me") == [
        ("Are we still on for Saturday? | Let me know", "Yes! Can't wait\nSee you at noon")]


def test_imessage_exporter_notes_are_not_words():
    imported = read_fixture("imessage_export_notes.txt")
    assert imported.malformed == 0
    assert dict(imported.counts) == {"deleted notices": 1, "group notices": 1, "reply notices": 1}
    assert "Yes!\nattachments/7/IMG_0042.jpeg" in [m.text for m in messages_of("imessage_export_notes.txt")]
    pairs, report = build_pairs([FIXTURES / "imessage_export_notes.txt"], make_config(me="Me"))
    assert pairs == [("Movie tonight?", "Yes!"), ("Which cinema?", "The one downtown")]
    assert report.counts["call records dropped"] == 1 and report.app_texts["reply notices"] == 1


def test_discord_json_nickname_time_zones_and_system_messages():
    imported = read_fixture("discord.json")
    assert imported.format == "discord-json" and imported.malformed == 1  # the message without an author
    assert messages_of("discord.json")[1].time == datetime(2024, 1, 2, 21, 5)  # 22:05+01:00 in UTC
    assert pairs_from("discord.json") == [("gg! rematch?", "sure, in 10"), ("ok ready", "go go go")]


def test_discord_csv():
    assert read_fixture("discord.csv").format == "discord-csv"
    assert pairs_from("discord.csv", me="ana.silva") == [("coffee later?", "yes please")]


def test_generic_csv_through_columns():
    options = dict(columns="sender=Author,text=Content,time=Date")
    assert read_fixture("generic.csv", **options).malformed == 1  # "yesterday" is no time
    assert pairs_from("generic.csv", **options) == [("bom dia", "bom dia! dormiste bem?")]
    with pytest.raises(UserError, match="--columns"):
        read_fixture("generic.csv")  # a CSV nobody described
    with pytest.raises(UserError, match="'Message'"):
        read_fixture("generic.csv", columns="sender=Author,text=Message")


def test_hand_written_jsonl_is_passed_through_cleaned():
    imported = read_fixture("pairs.jsonl")
    assert imported.format == "jsonl" and imported.malformed == 2
    pairs, report = build_pairs([FIXTURES / "pairs.jsonl"], make_config(me=""))
    assert pairs == [("what's your favourite food?", "bacalhau, obviously"), ("where do you work?", "at the library")]
    assert report.counts["pairs empty after cleaning"] == 1


def test_several_me_spellings_in_one_run():
    pairs = pairs_from("imessage.csv", "whatsapp_year_first.txt", me="Me, ana silva")
    assert ("Ready for the trip?", "Almost, packing now") in pairs and len(pairs) == 2


# ----------------------------------------------------------------------------------------------
# Cleaning rules, one at a time


def test_control_characters_never_survive():
    text, counts = clean("a\x01b\x02c\x03\x00d\te\r\nf\x1b")
    assert text == "abcd\te\nf" and counts["control/invisible characters removed"] == 1


def test_lowercase():
    assert clean("Hello There")[0] == "Hello There"
    text, counts = clean("Hello There", lowercase=True)
    assert text == "hello there" and counts["lowercased"] == 1


@pytest.mark.parametrize("placeholder", ["<Media omitted>", "image omitted", "\u200esticker omitted", "GIF omitted",
                                         "<attached: 00000012-PHOTO-2023.jpg>", "This message was deleted",
                                         "\ufffc"])
def test_drop_media(placeholder):
    text, counts = clean(placeholder)
    assert text == "" and counts["media placeholders removed"] == 1
    assert clean(placeholder, drop_media=False)[0] != ""


def test_drop_media_keeps_a_caption():
    assert clean("<attached: 00000012-PHOTO.jpg>\nlook at this")[0] == "look at this"
    assert clean("ok <This message was edited>")[0] == "ok"


def test_replace_links():
    text, counts = clean("see https://example.com/a?b=1, and www.test.org.")
    assert text == "see link, and link." and counts["links replaced"] == 1
    assert clean("see http://x.io", replace_links=False)[0] == "see http://x.io"


def test_squeeze_repeats():
    text, counts = clean("oooooh noooo!!!!!")
    assert text == "oooh nooo!!!" and counts["repeats squeezed"] == 1
    assert clean("aaa haha 1000000")[1]["repeats squeezed"] == 0  # three is kept, and so are digits
    assert clean("oooooh", squeeze_repeats=False)[0] == "oooooh"


@pytest.mark.parametrize("reaction", ['Loved “see you”', 'Liked "ok"', 'Disliked “rain”', 'Laughed at “lol”',
                                      'Emphasized “tomorrow!”', 'Questioned “why?”', 'Reacted 😂 to “the joke”',
                                      "Loved an image", "Bruno Costa reacted ❤️ to your message",
                                      "Reacted 👍 to your message"])
def test_drop_reactions(reaction):
    text, counts = clean(reaction)
    assert text == "" and counts["reactions dropped"] == 1
    assert clean(reaction, drop_reactions=False)[0] == reaction


@pytest.mark.parametrize("reaction", ["Reaccionó 😂 a tu mensaje", "Bruno reagiu com ❤️ à sua mensagem",
                                      "Hat mit 👍 auf deine Nachricht reagiert", "A réagi 😮 à votre message",
                                      "Ha reagito con ❤ al tuo messaggio", "Heeft gereageerd met 👍 op je bericht",
                                      "Le gustó un mensaje", "Curtiu uma mensagem",
                                      "Reagiu com emoji sua mensagem"])  # as a real Messenger export writes it
def test_drop_reactions_in_other_languages(reaction):
    text, counts = clean(reaction)
    assert text == "" and counts["reactions dropped"] == 1


@pytest.mark.parametrize("notice, rule", [
    ("Voice call, 3 min", "call records dropped"), ("Video call, No answer", "call records dropped"),
    ("Missed voice call", "call records dropped"), ("Bruno started a video chat.", "call records dropped"),
    ("Started a call that lasted 5 minutes.", "call records dropped"),
    ("You changed the group photo.", "group/server notices dropped"),
    ("Carla named the group Porto 2024.", "group/server notices dropped"),
    ("You set the nickname for Bruno Costa to Bru.", "group/server notices dropped"),
    ("Bruno created a poll: Dinner where?", "group/server notices dropped"),
    ('Carla voted for "Pizza" in the poll.', "group/server notices dropped"),
    ("Joined the server.", "group/server notices dropped"), ("Pinned a message.", "group/server notices dropped"),
    ("Bruno unsent a message.", "media placeholders removed"),
    ("Sándor csatolt fájlt küldött.", "media placeholders removed"),  # Hungarian Messenger: "sent an attachment"
    ("attachments/12/IMG_0001.jpeg", "media placeholders removed")])
def test_english_system_texts_are_dropped(notice, rule):
    text, counts = clean(notice)
    assert text == "" and counts[rule] == 1
    assert clean(notice, drop_media=False)[0] == notice


@pytest.mark.parametrize("words", ["I missed your call, sorry", "the video call was fun", "we named the group chat after you",
                                   "see attachments/ folder"])
def test_system_text_rules_leave_words_alone(words):
    assert clean(words)[0] == words


@pytest.mark.parametrize("words", ['I loved "Dune"', "Loved it", "he reacted badly"])
def test_drop_reactions_leaves_words_alone(words):
    assert clean(words)[0] == words


def test_drop_emoji():
    assert clean("ok 👍🏽 great ❤️")[0] == "ok 👍🏽 great ❤️"  # off by default
    text, counts = clean("ok 👍🏽 great ❤️", drop_emoji=True)
    assert text == "ok great" and counts["emoji removed"] == 1


def test_scrub_private():
    text, counts = clean("mail ana.silva+x@example.co.uk or call +351 912 345 678 / (555) 123-4567 / 912345678")
    assert text == "mail <email> or call <phone> / <phone> / <phone>" and counts["private details scrubbed"] == 1
    assert counts["scrubbed email"] == 1 and counts["scrubbed phone"] == 3
    numbers = "on 2024-01-02 at 21:41 I paid 1,000,000 (not 1000000) for 3.14159265"
    assert clean(numbers)[0] == numbers
    assert clean("a@b.com", scrub_private=False)[0] == "a@b.com"


def test_since_keeps_later_messages():
    pairs, report = build_pairs([FIXTURES / "whatsapp_android.txt"], make_config(since="2024-01-01", reply_window=300))
    assert pairs == [("Happy new year! Call me at <phone> or mail <email>", "Happy new year :) see link.")]
    assert report.counts["before --since"] == 7


def test_top_contacts_keeps_the_busiest_conversations():
    paths = [FIXTURES / "whatsapp_android.txt", FIXTURES / "whatsapp_dotted.txt"]
    pairs, report = build_pairs(paths, make_config(top_contacts=1))
    assert ("Hallo Ana", "Hallo Bruno") not in pairs and len(pairs) == 2
    assert report.counts["outside --top_contacts"] == 2


def test_messages_empty_after_cleaning_are_dropped_before_pairing():
    conversation = [Message("Bruno", "hi", datetime(2024, 1, 1)), Message("Ana Silva", "👍", datetime(2024, 1, 1))]
    config = make_config(drop_emoji=True)
    counts = Counter()
    cleaner = Cleaner(config, counts)
    cleaned = [m for m in (Message(m.sender, cleaner.clean(m.text), m.time) for m in conversation) if m.text]
    assert reply_pairs(cleaned, me_matcher("Ana Silva"), timedelta(minutes=30), counts) == []
    assert counts["messages empty after cleaning"] == 1


# ----------------------------------------------------------------------------------------------
# The reply window and turns


def at(minutes: int) -> datetime:
    return datetime(2024, 1, 1, 12, 0) + timedelta(minutes=minutes)


def shaped(messages, window=30):
    counts = Counter()
    return reply_pairs(messages, me_matcher("ana"), timedelta(minutes=window), counts), counts


def test_reply_window_runs_from_their_last_message_to_my_first():
    pairs, _ = shaped([Message("Bruno", "a", at(0)), Message("Bruno", "b", at(50)), Message("Ana", "c", at(60)),
                       Message("Ana", "d", at(200))])
    assert pairs == [("a | b", "c | d")]


def test_reply_window_edges():
    assert shaped([Message("Bruno", "a", at(0)), Message("Ana", "b", at(30))])[0] == [("a", "b")]
    pairs, counts = shaped([Message("Bruno", "a", at(0)), Message("Ana", "b", at(31))])
    assert pairs == [] and counts["replies outside --reply_window"] == 1
    assert len(pairs_from("whatsapp_android.txt", reply_window=300)) == 3


def test_a_long_silence_ends_a_turn():
    weeks = 7 * 7 * 24 * 60
    messages = [Message("Bruno", "thanks for the help", at(0)), Message("Ana", "ok thanks", at(2)),
                Message("Ana", "are you around this weekend?", at(weeks)), Message("Bruno", "yes!", at(weeks + 5)),
                Message("Ana", "great", at(weeks + 6))]
    counts = Counter()
    pairs = reply_pairs(messages, me_matcher("ana"), timedelta(minutes=30), counts, timedelta(hours=3))
    assert pairs == [("thanks for the help", "ok thanks"), ("yes!", "great")]
    assert counts["turns ended by --silence_hours"] == 1
    assert shaped(messages)[0] == [("thanks for the help", "ok thanks | are you around this weekend?"), ("yes!", "great")]


def test_silence_hours_from_the_command_line_options(tmp_path):
    chat = tmp_path / "chat.txt"
    chat.write_text("15/1/24, 9:00 - Bruno: hi\n15/1/24, 9:01 - Ana Silva: hello\n15/1/24, 11:01 - Ana Silva: still there?\n",
                    encoding="utf-8")
    assert build_pairs([chat], make_config())[0] == [("hi", "hello | still there?")]
    assert build_pairs([chat], make_config(silence_hours=1))[0] == [("hi", "hello")]
    with pytest.raises(UserError, match="silence_hours"):
        main([str(chat), "--me=Ana Silva", "--silence_hours=0"])


def test_my_own_messages_never_become_an_input():
    pairs, _ = shaped([Message("Ana", "a", at(0)), Message("Bruno", "b", at(1)), Message("Ana", "c", at(2))])
    assert pairs == [("b", "c")]


def test_one_chat_split_over_files_is_merged_and_sorted():
    first = Conversation("m:1", "Bruno", [Message("Ana", "reply", at(5))])
    second = Conversation("m:1", "Bruno", [Message("Bruno", "question", at(0))])
    (merged,) = merge_conversations([first, second])
    assert [m.text for m in merged.messages] == ["question", "reply"]


def test_the_same_chat_exported_twice_gives_each_pair_once(tmp_path):
    january = ("15/1/24, 9:00 - Bruno: hi\n15/1/24, 9:01 - Ana Silva: hello\n"
               "15/1/24, 9:02 - Bruno: ok\n15/1/24, 9:02 - Bruno: ok\n15/1/24, 9:03 - Ana Silva: ok!\n")
    june = january + "20/6/24, 9:00 - Bruno: summer?\n20/6/24, 9:05 - Ana Silva: yes\n"
    (tmp_path / "January.txt").write_text(january, encoding="utf-8")
    (tmp_path / "June.txt").write_text(june, encoding="utf-8")
    pairs, report = build_pairs([tmp_path / "January.txt", tmp_path / "June.txt"], make_config())
    assert pairs == [("hi", "hello"), ("ok | ok", "ok!"), ("summer?", "yes")]  # "ok" twice in one file stays twice
    assert report.counts["duplicate messages dropped"] == 5 and report.conversations_used == 1
    copies = [FIXTURES / "telegram_account.json", tmp_path / "copy.json"]
    copies[1].write_bytes(copies[0].read_bytes())
    assert build_pairs(copies, make_config())[0] == pairs_from("telegram_account.json")


def test_select_conversations_counts_groups():
    report = Report(me="Ana", out="x")
    group = Conversation("g", "g", [Message(name, "x", at(0)) for name in ("A", "B", "Ana")])
    single = Conversation("s", "s", [Message("B", "x", at(0)), Message("Ana", "y", at(1))])
    assert select_conversations([group, single], make_config(), report) == [single]
    assert report.group_chats_skipped == 1


# ----------------------------------------------------------------------------------------------
# Facts


def test_facts_become_repeated_questions():
    pairs = dict(fact_pairs(str(FIXTURES / "facts.json")))
    assert pairs["what is your name?"] == "Ana Silva"
    assert pairs["where are you from?"] == pairs["where is your hometown?"] == "Porto"
    assert pairs["what is your favourite colour?"] == "green"
    all_pairs, report = build_pairs([FIXTURES / "whatsapp_dotted.txt"],
                                    make_config(facts=str(FIXTURES / "facts.json"), facts_repeat=3))
    assert report.fact_pairs == 6 * 3 and all_pairs.count(("who are you?", "Ana Silva")) == 3


def test_facts_as_a_list_and_bad_facts(tmp_path):
    listed = tmp_path / "facts.json"
    listed.write_text('[{"input": "favourite band?", "output": "Radiohead"}]', encoding="utf-8")
    assert fact_pairs(str(listed)) == [("favourite band?", "Radiohead")]
    listed.write_text('"just a string"', encoding="utf-8")
    with pytest.raises(UserError, match="facts"):
        fact_pairs(str(listed))
    with pytest.raises(UserError):
        fact_pairs(str(tmp_path / "missing.json"))


# ----------------------------------------------------------------------------------------------
# The command line: output, report, errors


def test_main_writes_pairs_and_reports_counts(tmp_path, capsys):
    out = tmp_path / "deep" / "pairs.jsonl"
    names = ["whatsapp_android.txt", "whatsapp_ios.txt", "messenger_message_1.json", "pairs.jsonl",
             "telegram_chat.json", "whatsapp_group.txt"]
    report = main([str(FIXTURES / name) for name in names] + ["--me=Ana Silva", f"--out={out}"])
    by_name = {Path(file.path).name: file for file in report.files}
    assert by_name["whatsapp_android.txt"].format == "whatsapp" and by_name["whatsapp_android.txt"].messages == 10
    assert by_name["messenger_message_1.json"].malformed == 1 and by_name["telegram_chat.json"].malformed == 2
    assert by_name["pairs.jsonl"].messages == 3 and by_name["pairs.jsonl"].format == "jsonl"
    assert report.group_chats_skipped == 1
    assert report.counts["reactions dropped"] == 1 and report.counts["repeats squeezed"] == 1
    assert report.counts["media placeholders removed"] == 6  # Android 1, iOS 3, Messenger 1, Telegram 1
    assert report.pairs == 2 + 3 + 1 + 2 + 2
    lines = out.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == report.pairs and all(set(r) <= {"input", "output", "context", "session", "time", "me"} for r in records)
    text = "".join(r["input"] + r["output"] for r in records)
    assert report.vocabulary == len(set(text)) and not CONTROL & set(text)
    assert [p.name for p in out.parent.iterdir()] == ["pairs.jsonl"]  # the temporary file is gone
    printed = capsys.readouterr().out
    assert "pairs written: 10" in printed and "whatsapp_android.txt: whatsapp, 10 messages" in printed


def test_me_matching_nobody_is_reported(tmp_path):
    report = main([str(FIXTURES / "whatsapp_dotted.txt"), str(FIXTURES / "imessage.csv"), "--me=Ana Silva",
                   f"--out={tmp_path / 'out.jsonl'}"])
    note = next(file.note for file in report.files if file.path.endswith("imessage.csv"))
    assert "matches nobody" in note and "Bruno" in note


def test_no_pairs_names_the_speakers(tmp_path):
    with pytest.raises(UserError, match="Bruno") as caught:
        main([str(FIXTURES / "whatsapp_android.txt"), "--me=Anna", f"--out={tmp_path / 'out.jsonl'}"])
    assert "Ana Silva" in str(caught.value)
    assert not (tmp_path / "out.jsonl").exists()
    with pytest.raises(UserError, match="--me"):
        main([str(FIXTURES / "whatsapp_android.txt"), f"--out={tmp_path / 'out.jsonl'}"])


def test_options_are_checked(tmp_path):
    chat = str(FIXTURES / "whatsapp_android.txt")
    with pytest.raises(UserError, match="reply_window"):
        main([chat, "--me=Ana Silva", "--reply_windw=5"])
    with pytest.raises(UserError, match="YYYY-MM-DD"):
        main([chat, "--me=Ana Silva", "--since=31/12/2023"])
    with pytest.raises(UserError, match="--columns"):
        main([chat, "--me=Ana Silva", "--columns=who=Author"])
    with pytest.raises(UserError, match="format"):
        main([chat, "--me=Ana Silva", "--format=signal"])
    with pytest.raises(UserError, match="no such file"):
        main([str(tmp_path / "missing.txt"), "--me=Ana Silva"])


def test_output_never_overwrites_an_input(tmp_path):
    chat = tmp_path / "chat.txt"
    chat.write_bytes((FIXTURES / "whatsapp_android.txt").read_bytes())
    with pytest.raises(UserError, match="overwritten"):
        main([str(chat), "--me=Ana Silva", f"--out={chat}"])
    assert chat.read_bytes() == (FIXTURES / "whatsapp_android.txt").read_bytes()


def test_a_folder_is_read_file_by_file_and_strangers_are_skipped(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "chat.txt").write_bytes((FIXTURES / "whatsapp_ios.txt").read_bytes())
    (folder / "notes.txt").write_text("shopping list: eggs", encoding="utf-8")
    report = main([str(folder), "--me=Ana Silva", f"--out={folder / 'pairs.jsonl'}"])
    assert [file.format for file in report.files] == ["whatsapp", "skipped"] and report.pairs == 3
    again = main([str(folder), "--me=Ana Silva", f"--out={folder / 'pairs.jsonl'}"])  # its own output is not read
    assert again.pairs == 3


def test_whatsapp_zip_as_ios_shares_it_and_a_folder_lists_what_it_skipped(tmp_path, capsys):
    archive = tmp_path / "WhatsApp Chat - Bruno.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("_chat.txt", (FIXTURES / "whatsapp_ios.txt").read_bytes())
        zipped.writestr("00000012-PHOTO-2023-12-31-21-46-00.jpg", b"\xff\xd8 not really a photo")
    report = main([str(archive), "--me=Ana Silva", f"--out={tmp_path / 'pairs.jsonl'}"])
    assert report.pairs == 3 and [file.format for file in report.files] == ["whatsapp"]
    assert report.skipped == [(f"{archive}/00000012-PHOTO-2023-12-31-21-46-00.jpg", "media or attachment")]
    assert "skipped 1 file(s), media or attachment: 00000012-PHOTO" in capsys.readouterr().out
    android = tmp_path / "android"
    android.mkdir()
    (android / "WhatsApp Chat with Bruno.txt").write_bytes((FIXTURES / "whatsapp_android.txt").read_bytes())
    for name in ("IMG-20231231-WA0001.jpg", "PTT-20231231-WA0002.opus", "notes.pdf", "x.bin"):
        (android / name).write_bytes(b"\x00")
    report = main([str(android), "--me=Ana Silva", f"--out={tmp_path / 'pairs.jsonl'}"])
    assert report.pairs == 2 and sorted(reason for _, reason in report.skipped) == [
        "media or attachment", "media or attachment", "media or attachment", "not a chat format (.bin)"]


def test_a_zip_that_is_not_one_or_holds_no_chat_is_one_clear_error(tmp_path):
    broken = tmp_path / "chat.zip"
    broken.write_bytes(b"PK not really")
    with pytest.raises(UserError, match="not a readable .zip"):
        main([str(broken), "--me=Ana Silva", f"--out={tmp_path / 'pairs.jsonl'}"])
    with zipfile.ZipFile(broken, "w") as zipped:
        zipped.writestr("photo.jpg", b"\xff")
    with pytest.raises(UserError, match="holds no chat export"):
        main([str(broken), "--me=Ana Silva", f"--out={tmp_path / 'pairs.jsonl'}"])


def test_telegram_html_export_over_two_pages():
    folder = FIXTURES / "telegram_html"
    imported, _ = read_export(folder / "messages.html", make_config())
    assert imported.format == "telegram-html" and imported.counts["service lines"] == 2
    assert [(m.sender, m.text) for m in imported.conversations[0].messages] == [
        ("Bruno Costa", "Are you coming to the concert?\nIt starts at 9 & ends late"), ("Bruno Costa", "<Media omitted>"),
        ("Ana Silva", "Yes! See you there"), ("Bruno Costa", "Doors open at 8")]  # the joined photo is Bruno's
    assert imported.conversations[0].title == "Bruno Costa"
    pairs, report = build_pairs([folder], make_config())
    assert pairs == [("Are you coming to the concert?\nIt starts at 9 & ends late", "Yes! See you there"),
                     ("Doors open at 8 | Bring the tickets", "Got them here")]  # messages2.html starts "joined"
    assert report.conversations_used == 1


@pytest.mark.slow
def test_unreadable_file_is_one_clean_error(tmp_path):
    binary = tmp_path / "photo.bin"
    binary.write_bytes(bytes(range(256)) * 8)
    result = subprocess.run([sys.executable, str(ROOT / "chat_data.py"), str(binary), "--me=Ana",
                             f"--out={tmp_path / 'out.jsonl'}"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "error:" in result.stderr and "Traceback" not in result.stderr + result.stdout
    assert "WhatsApp" in result.stderr and "first line" in result.stderr


@pytest.mark.slow
def test_a_huge_line_and_an_empty_file_from_the_command_line(tmp_path):
    """A 4 MB message (a pasted log, say) is read like any other; an empty export is a clear error."""
    huge = "ha" * 2_000_000
    chat = tmp_path / "chat.txt"
    chat.write_text(f"12/31/23, 9:41 PM - Bruno: {huge}\n12/31/23, 9:42 PM - Ana Silva: ok\n", encoding="utf-8")
    out = tmp_path / "pairs.jsonl"
    result = subprocess.run([sys.executable, str(ROOT / "chat_data.py"), str(chat), "--me=Ana Silva", f"--out={out}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert [{k: r[k] for k in ("input", "output")} for r in map(json.loads, out.read_text(encoding="utf-8").splitlines())] == [
        {"input": huge, "output": "ok"}]
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    result = subprocess.run([sys.executable, str(ROOT / "chat_data.py"), str(empty), "--me=Ana", f"--out={out}"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "empty" in result.stderr
    assert json.loads(out.read_text(encoding="utf-8").splitlines()[0])["output"] == "ok"  # the earlier output stays


PATHOLOGICAL = {"hahaha": "ha" * 250_000, "digits then a letter": "1" * 500_000 + "x", "spaced digits": "1 " * 250_000 + "1x",
                "no @ after dots": "a." * 250_000, "links": "www.," * 100_000, "dots then @": "." * 500_000 + "@",
                "attachments": "/Attachments/" * 40_000 + " ", "sent": "x sent " * 75_000, "reacted": "reacted " * 75_000,
                "omitted words": "image " * 100_000 + "x", "tapback": 'Loved "' + "x" * 500_000,
                "spelled e-mails": "a at b dot " * 50_000, "iban starts": "DE89 " * 100_000, "colons": "1:" * 150_000,
                "password words": "password: " * 50_000, "phones": "call +351 912 345 678 " * 10_000}


@pytest.mark.slow
def test_no_cleaning_rule_takes_quadratic_time_on_a_huge_message():
    """Each half-megabyte text is cleaned in about a second by linear patterns; a pattern that
    rescans the run from every position takes an hour or more on some of them, and this subprocess
    would time out."""
    script = ("import sys, collections\nfrom chat.cleaning import Cleaner\nfrom chat.options import ChatDataConfig\nfrom tests.test_chat_data import PATHOLOGICAL\n"
              "cleaner = Cleaner(ChatDataConfig(me='x', drop_emoji=True), collections.Counter())\n"
              "for text in PATHOLOGICAL.values(): cleaner.clean(text)\nprint('done')")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert result.stdout.strip() == "done", result.stderr


def test_unknown_text_and_truncated_json_say_what_they_saw(tmp_path):
    with pytest.raises(UserError, match="shaped 'xxxxx Xxxxx 99'") as err:  # the shape, never the words
        parse_export("hello World 42\nsecond line", "notes.txt", make_config())
    assert "hello" not in str(err.value) and "42" not in str(err.value)
    with pytest.raises(UserError, match="'hello World 42'"):
        parse_export("hello World 42\nsecond line", "notes.txt", make_config(log_text=True))
    truncated = (FIXTURES / "telegram_chat.json").read_text(encoding="utf-8")[:300]
    with pytest.raises(UserError, match="not valid JSON"):
        parse_export(truncated, "result.json", make_config())


def test_bad_bytes_are_replaced_and_counted(tmp_path):
    raw = (FIXTURES / "whatsapp_ios.txt").read_bytes().replace(b"Olha", b"Ol\xffha")  # UTF-8 elsewhere
    path = tmp_path / "chat.txt"
    path.write_bytes(raw)
    _, undecodable = read_export(path, make_config())
    assert undecodable == 1
    path.write_bytes((FIXTURES / "whatsapp_android.txt").read_bytes().replace(b"Bringing", b"Bring\xffing"))
    assert read_export(path, make_config())[1] == 0  # no UTF-8 beyond ASCII anywhere: read as Windows-1252
    assert "Bring\u00ffing cake" in [m.text for m in read_export(path, make_config())[0].conversations[0].messages]
    assert decode("a,b\n".encode("utf-16")) == ("a,b\n", 0)


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-16", "cp1252"])
def test_exports_in_other_encodings(tmp_path, encoding):
    chat = tmp_path / "chat.txt"
    chat.write_bytes("14/03/2025, 09:00 - Bruno: Um café?\n14/03/2025, 09:01 - Ana Silva: Sí, à tarde – “ok”\n".encode(encoding))
    imported, undecodable = read_export(chat, make_config())
    assert imported.format == "whatsapp" and undecodable == 0
    assert build_pairs([chat], make_config())[0] == [("Um café?", "Sí, à tarde – “ok”")]


def test_messenger_without_participants_is_not_taken_for_telegram():
    data = json.loads((FIXTURES / "messenger_message_1.json").read_text(encoding="utf-8"))
    del data["participants"]
    imported = parse_export(json.dumps(data), "message_1.json", make_config())
    assert imported.format == "messenger" and imported.malformed == 1


# ----------------------------------------------------------------------------------------------
# Properties: whatever arrives, only UserError comes out, and no control character goes in

FAST = settings(max_examples=50, deadline=None)
WHATSAPP_STARTS = ["12/31/23, 9:41 PM - ", "[31/12/2023, 21:41:05] ", "99/99/99, 99:99 - ", "2024-13-45, 25:61 - ",
                   "0/0/0, 0:00 a. m. - ", "\u200e[1/1/24, 12:00:00\u202fAM] ", "Jan 02, 2024  9:41:05 PM\n", ""]
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)
MESSAGE_KEYS = ["type", "date", "date_unixtime", "from", "from_id", "text", "sender_name", "timestamp_ms", "content",
                "photos", "author", "timestamp", "attachments", "input", "output",
                "creator", "created_date", "From", "Media Type", "Created", "IsSender", "ts", "user", "subtype", "thread_ts",
                "sender", "body", "quote", "chatItem", "messagetype", "originalarrivaltime"]
MESSAGE_LIKE = st.dictionaries(st.sampled_from(MESSAGE_KEYS), JSON_VALUES, max_size=6)
EXPORT_LIKE = st.fixed_dictionaries({"messages": st.lists(MESSAGE_LIKE | JSON_VALUES, max_size=5)},
                                    optional={"participants": JSON_VALUES, "channel": JSON_VALUES, "name": JSON_VALUES,
                                              "chats": st.fixed_dictionaries({"list": st.lists(JSON_VALUES, max_size=3)})})


def only_user_errors(read, *args) -> None:
    try:
        read(*args)
    except UserError:
        pass


@pytest.mark.parametrize("reader", sorted(TEXT_READERS))
@FAST
@given(text=st.text(max_size=300))
def test_text_importers_raise_only_user_errors(reader, text):
    only_user_errors(TEXT_READERS[reader], text, "x", make_config(columns="sender=a,text=b,time=c"))


@FAST
@given(lines=st.lists(st.tuples(st.sampled_from(WHATSAPP_STARTS), st.text(max_size=40)), max_size=8))
def test_whatsapp_shaped_text_raises_only_user_errors(lines):
    text = "\n".join(start + rest for start, rest in lines)
    only_user_errors(read_whatsapp, text, "x", make_config())
    only_user_errors(read_imessage_text, text, "x", make_config())


@FAST
@given(data=JSON_VALUES | EXPORT_LIKE)
def test_json_importers_raise_only_user_errors(data):
    for reader in sorted(JSON_READERS):  # each datum to every reader: the drawing, not the reading, costs the time
        only_user_errors(JSON_READERS[reader], data, "x")


@FAST
@given(raw=st.binary(max_size=400) | st.builds(lambda d: json.dumps(d).encode(), EXPORT_LIKE))
def test_any_bytes_raise_only_user_errors(raw):
    text, _ = decode(raw)
    only_user_errors(parse_export, text, "x", make_config())
    only_user_errors(parse_export, text[: len(text) // 2], "x", make_config())  # truncated


@FAST
@given(text=st.text(st.characters(codec=None, exclude_categories=()), max_size=200))
def test_cleaned_text_has_no_control_characters_and_can_be_written(text):
    cleaned, _ = clean(text, drop_emoji=True, lowercase=True)
    assert not CONTROL & set(cleaned)
    cleaned.encode("utf-8")  # no lone surrogates

"""chat_data.py on the formats of issue 28 (LINE, KakaoTalk, Signal, Slack, Google Chat, Snapchat, Skype):
each fixture, written in the app's exact bytes with invented people, gives exact pairs from the command
line; the apps' own texts are counted and never reach the pairs; detection tells the formats apart."""
import json
import subprocess
import sys
import zipfile
from datetime import datetime
from pathlib import Path

import pytest
from conftest import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

from chat.cleaning import Cleaner
from chat.detect import parse_export, read_export
from chat.options import ChatDataConfig
from chat.pipeline import main
from chat.slack import read_slack_export, unwrap
from gptlib.errors import UserError

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "chats"
ME = "Ana Silva,Me,ana.silva"


def run(tmp_path, *paths, **options) -> tuple[list[tuple[str, str]], object]:
    out = tmp_path / "pairs.jsonl"
    argv = [str(FIXTURES / p) for p in paths] + [f"--me={ME}", f"--out={out}"]
    argv += [f"--{key}={value}" for key, value in options.items()]
    report = main(argv)
    pairs = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    return [(pair["input"], pair["output"]) for pair in pairs], report


def imported(name: str):
    result, _ = read_export(FIXTURES / name, ChatDataConfig(me=ME))
    return result


# ----------------------------------------------------------------------------------------------
# LINE

def test_line_english_new(tmp_path):
    pairs, report = run(tmp_path, "line/line_en.txt")
    assert report.files[0].format == "line"
    assert pairs == [("Are you coming tonight?", "Yes!\nSee you at 10"),  # the sticker is no word; the quotes go
                     ("Look at this place", "Wow"),  # the photo before it is dropped, the unsent notice too
                     ("Good morning", "Morning!")]
    assert {k: v for k, v in report.app_texts.items() if v} == {
        "stickers": 1, "media placeholders (any language)": 1, "deleted notices": 1, "call records": 1}


def test_line_english_old_12_hour_with_bom_and_crlf(tmp_path):
    pairs, _ = run(tmp_path, "line/line_en_old.txt")
    assert pairs == [("Dinner tomorrow?", "Sure"), ("Still up?", "Yes")]
    times = [m.time for m in imported("line/line_en_old.txt").conversations[0].messages]
    assert times[0] == datetime(2024, 1, 4, 21, 41) and times[2] == datetime(2024, 1, 5, 0, 5)  # "Thu, 1/4": month first


def test_line_japanese(tmp_path):
    pairs, report = run(tmp_path, "line/line_ja.txt")
    assert pairs == [("今夜来る？", "行くよ！"), ("じゃあ10時に", "了解")]
    assert report.app_texts["stickers"] == 1 and report.app_texts["deleted notices"] == 1
    assert report.app_texts["call records"] == 1  # "☎ 通話時間 1:23" is not Ana's words


def test_line_traditional_chinese_with_full_width_brackets(tmp_path):
    pairs, report = run(tmp_path, "line/line_zh_tw.txt")
    assert pairs == [("今晚來嗎？", "會！"), ("十點見", "好")]
    assert report.app_texts["stickers"] == 1 and report.app_texts["deleted notices"] == 1
    assert imported("line/line_zh_tw.txt").conversations[0].messages[0].time == datetime(2024, 1, 4, 21, 41)  # 下午09:41


def test_line_thai_group_buddhist_years(tmp_path):
    result = imported("line/line_th_group.txt")
    conversation = result.conversations[0]
    assert conversation.title == "ทริปเชียงใหม่" and conversation.marked_group
    assert conversation.messages[0].time == datetime(2024, 1, 4, 21, 41)  # 2567 in the Buddhist calendar
    assert result.counts["group events"] == 1  # "สมชาย เพิ่ม สมหญิง เข้ากลุ่ม", a line without a sender
    with pytest.raises(UserError, match="1 group chat"):
        run(tmp_path, "line/line_th_group.txt")  # more than two people: skipped unless asked
    pairs, _ = run(tmp_path, "line/line_th_group.txt", group_chats="true")
    assert pairs == [("ไปกี่โมง", "สิบโมงนะ"), ("โอเค", "เจอกัน\nที่สถานี")]


@pytest.mark.parametrize("date_line", ["พฤ. 04/01/2567", "วันพฤหัสบดี, 04/01/2567", "04/01/2567 วันพฤหัสบดี", "Thu, 1/4/2024",
                                       "1/4/2024(Thu)", "2024/01/04(木)", "2024.01.04 Thursday", "2024/01/04（四）"])
def test_line_date_lines_of_old_and_new_versions(date_line):
    text = f"[LINE] Chat history with Bruno\n\n{date_line}\n21:41\tBruno\thi\n"
    assert parse_export(text, "x.txt", ChatDataConfig(me="x")).conversations[0].messages[0].time == datetime(2024, 1, 4, 21, 41)


def test_line_space_separated_pc_file_learns_names_with_spaces(tmp_path):
    pairs, _ = run(tmp_path, "line/line_pc_spaced.txt")
    assert pairs == [("Are you there?", "Yes, just got home\nit was a long day"), ("Tomorrow then", "Ok")]
    assert {m.sender for m in imported("line/line_pc_spaced.txt").conversations[0].messages} == {"Bruno Costa", "Ana Silva"}


def test_line_a_quote_that_opens_a_message_does_not_swallow_the_next_ones():
    text = '[LINE] Chat history with Bruno\n\n2024/01/04(Thu)\n21:41\tBruno\t"Hi" he said\n21:42\tAna\tok\n'
    messages = parse_export(text, "x.txt", ChatDataConfig(me="Ana")).conversations[0].messages
    assert [(m.sender, m.text) for m in messages] == [("Bruno", '"Hi" he said'), ("Ana", "ok")]


def test_line_notices_name_their_sender_first_and_words_stay():
    text = ("[LINE] Chat history with Bruno\n\n2024/01/04(Thu)\n21:41\tBruno\tI invited Carla to the party\n"
            "21:42\tBruno\tBruno joined the group.\n")
    result = parse_export(text, "x.txt", ChatDataConfig(me="x"))
    assert [m.text for m in result.conversations[0].messages] == ["I invited Carla to the party"]
    assert result.counts["group events"] == 1


def test_kakao_pc_message_lines_that_mention_an_invitation_are_words():
    text = "--------------- 2024년 1월 4일 목요일 ---------------\n[Bruno] [오후 9:41] so\nthen I invited Carla.\n[Ana] [오후 9:42] ok\n"
    messages = parse_export(text, "x.txt", ChatDataConfig(me="x")).conversations[0].messages
    assert messages[0].text == "so\nthen I invited Carla."


def test_line_title_starting_with_a_bracket_is_not_json():
    empty = parse_export("[LINE] Chat history with Nobody\nSaved on: 2024/01/05 21:41\n", "x.txt", ChatDataConfig(me="x"))
    assert empty.format == "line" and empty.conversations[0].messages == []  # read as LINE, not "not valid JSON"
    assert parse_export("[LINE] Chat history with Bruno\n\n2024/01/04(Thu)\n21:41\tBruno\thi\n", "x.txt",
                        ChatDataConfig(me="x")).format == "line"


# ----------------------------------------------------------------------------------------------
# KakaoTalk

@pytest.mark.parametrize("name", ["kakao/kakao_android_ko.txt", "kakao/kakao_pc_ko.txt", "kakao/kakao.csv"])
def test_kakao_korean_mobile_pc_and_csv(tmp_path, name):
    pairs, report = run(tmp_path, name)
    assert report.files[0].format.startswith("kakaotalk")
    assert pairs[0] == ("오늘 저녁에 올래?", "응 갈게\n열 시에 봐")  # the emoticon before it is no word
    assert ("좋아", "ㅎㅎ") in pairs
    assert report.app_texts["stickers"] == 1 and report.app_texts["media placeholders (any language)"] == 1


def test_kakao_android_deleted_call_and_midnight(tmp_path):
    pairs, report = run(tmp_path, "kakao/kakao_android_ko.txt")
    assert pairs[-1] == ("자?", "아니")
    assert imported("kakao/kakao_android_ko.txt").conversations[0].messages[-2].time == datetime(2024, 1, 5, 0, 5)
    assert report.app_texts["deleted notices"] == 1 and report.app_texts["call records"] == 1


def test_kakao_ios_times_under_date_lines_and_notices(tmp_path):
    pairs, report = run(tmp_path, "kakao/kakao_ios_ko.txt")
    assert pairs == [("내일 시간 있어?", "있어!"), ("그럼 점심에", "좋아")]
    assert report.app_texts["group events"] == 1  # "Bruno Costa님이 나갔습니다."


@pytest.mark.parametrize("name, first", [("kakao/kakao_en.txt", ("Coming tonight?", "Yes!")),
                                         ("kakao/kakao_ios_en.txt", ("Lunch tomorrow?", "Sure")),
                                         ("kakao/kakao_pc_en.txt", ("Coming tonight?", "Yes!")),
                                         ("kakao/kakao_dotted_ko.txt", ("안녕", "안녕!"))])
def test_kakao_english_and_dotted_dates(tmp_path, name, first):
    pairs, report = run(tmp_path, name)
    assert report.files[0].format == "kakaotalk" and pairs[0] == first
    assert report.files[0].malformed == 0


# ----------------------------------------------------------------------------------------------
# Signal (signal-export)

@pytest.mark.parametrize("name", ["signal/Bruno Costa/chat.md", "signal/Bruno Costa/data.json"])
def test_signal_export_markdown_and_json_lines(tmp_path, name):
    pairs, report = run(tmp_path, name)
    assert report.files[0].format in ("signal-markdown", "signal-json")
    assert pairs == [("Are you coming tonight?", "Yes!"),  # the quote and the reaction are not Ana's words
                     ("See you at 10\nbring snacks", "Deal")]  # photo, sticker, deletion and call between are dropped
    counts = report.app_texts
    assert counts["quoted replies"] == counts["reactions"] == counts["stickers"] == 1
    assert counts["deleted notices"] == counts["call records"] == 1


def test_signal_own_plaintext_export_main_jsonl(tmp_path):
    pairs, report = run(tmp_path, "signal-export-2024-01-06")
    assert [file.format for file in report.files] == ["signal-backup", "skipped"]  # main.jsonl, metadata.json
    assert "main.jsonl beside it" in report.files[1].note
    assert pairs == [("Are you coming tonight?", "Yes! See you at 10"), ("Bring the tickets", "Got them")]
    counts = report.app_texts
    assert counts["stickers"] == counts["deleted notices"] == counts["call records"] == counts["quoted replies"] == 1
    conversation = imported("signal-export-2024-01-06/main.jsonl").conversations[0]
    assert conversation.title == "Bruno Costa" and {m.sender for m in conversation.messages} == {"Bruno Costa", "Ana Silva"}


def test_signal_folder_with_both_files_gives_each_pair_once(tmp_path):
    pairs, report = run(tmp_path, "signal/Bruno Costa")
    assert len(pairs) == 2 and report.counts["duplicate messages dropped"] == 6
    assert imported("signal/Bruno Costa/chat.md").conversations[0].title == "Bruno Costa"


def test_signal_old_date_form_is_not_taken_for_whatsapp(tmp_path):
    pairs, report = run(tmp_path, "signal/signal_old_chat.md")
    assert report.files[0].format == "signal-markdown"
    assert pairs == [("How is everyone?", "We're great!"), ("Good to hear", "And you?")]


# ----------------------------------------------------------------------------------------------
# Slack

def test_slack_workspace_zip(tmp_path):
    pairs, report = run(tmp_path, "slack_export.zip", group_chats="true")
    assert [file.format for file in report.files] == ["slack"]
    assert pairs == [("Lunch today?", "Sure, 12:30 at the usual place"), ("Olá, até já às 12:30", "ótimo"),
                     ("Who is bringing coffee?", "I am :coffee: maybe surely"),
                     ("Morning all! @Ana Silva did you see the plan? the plan doc", "Yes, looks good & clear")]
    assert report.app_texts["bot messages"] == 1 and report.app_texts["group events"] == 1  # standup bot, channel_join


def test_slack_thread_is_its_own_conversation_in_order():
    conversations = imported_slack().conversations
    thread = next(c for c in conversations if c.key.startswith("slack:general:"))
    assert [(m.sender, m.text.split()[0]) for m in thread.messages] == [
        ("Bruno Costa", "Morning"), ("Ana Silva", "Yes,"), ("Bruno Costa", "Great,")]
    main_channel = next(c for c in conversations if c.key == "slack:general")
    assert "Great, let's ship it" not in [m.text for m in main_channel.messages]


def test_slack_dms_are_used_and_channels_are_groups(tmp_path):
    pairs, report = run(tmp_path, "slack_export.zip")
    assert pairs == [("Lunch today?", "Sure, 12:30 at the usual place"), ("Olá, até já às 12:30", "ótimo")]
    assert report.group_chats_skipped == 2  # #general and its thread


def test_slack_folder_as_unpacked(tmp_path):
    folder = tmp_path / "Acme Slack export"
    with zipfile.ZipFile(FIXTURES / "slack_export.zip") as archive:
        archive.extractall(folder)
    report = main([str(tmp_path), f"--me={ME}", f"--out={tmp_path / 'out.jsonl'}"])
    assert [file.format for file in report.files] == ["slack"] and report.pairs == 2


def test_slack_markup_unwrapped():
    users = {"U1": ("Ana Silva", (), False)}
    assert unwrap("<@U1> see <https://x.org/a|the doc> in <#C9|random> <!channel> *now* &lt;3", users, {}) == \
        "@Ana Silva see the doc in #random @channel now <3"
    assert unwrap("<mailto:a@b.org|a@b.org> <@U7> 2*3*4 snake_case_name", users, {}) == "a@b.org @U7 2*3*4 snake_case_name"


def imported_slack():
    from chat.sources import find_sources, read_source
    sources, _ = find_sources([FIXTURES / "slack_export.zip"])
    return read_source(sources[0], ChatDataConfig(me=ME))[0]


# ----------------------------------------------------------------------------------------------
# Google Chat, Snapchat, Skype

def test_google_chat_takeout_zip(tmp_path):
    pairs, report = run(tmp_path, "google_chat_takeout.zip")
    assert pairs == [("Are you coming tonight?", "Yes! See you at 10"), ("Bring the tickets", "Got them")]
    assert [file.format for file in report.files] == ["skipped", "google-chat", "skipped"]  # group_info, user_info
    assert report.app_texts["deleted notices"] == 1 and report.app_texts["reactions"] == 1
    assert imported_takeout_title() == "Ana Silva, Bruno Costa"  # from group_info.json beside messages.json


def imported_takeout_title() -> str:
    from chat.sources import find_sources, read_source
    sources, _ = find_sources([FIXTURES / "google_chat_takeout.zip"])
    chat = next(s for s in sources if s.name.endswith("messages.json"))
    return read_source(chat, ChatDataConfig(me=ME))[0].conversations[0].title


@pytest.mark.parametrize("name, expected", [
    ("snapchat_chat_history.json", [("you coming tonight?", "yesss"), ("bring snacks", "ok")]),
    ("snapchat_chat_history_old.json", [("what's up", "not much"), ("dinner?", "sure")])])
def test_snapchat_newer_and_older_layouts(tmp_path, name, expected):
    pairs, report = run(tmp_path, name)
    assert report.files[0].format == "snapchat" and pairs == expected


def test_skype_tar(tmp_path):
    pairs, report = run(tmp_path, "8_live_ana.silva_export.tar")
    assert pairs == [("Are you coming tonight? :)", "Yes, I'll be there"), ("See link & bring snacks", "Deal")]
    assert report.skipped[0][1] == "media or attachment"
    counts = report.app_texts
    assert counts["call records"] == counts["quoted replies"] == counts["edit markers"] == counts["deleted notices"] == 1


# ----------------------------------------------------------------------------------------------
# Detection (item 6) and Messenger's poll notices (item 7)

def test_json_lines_are_recognised_not_called_invalid_json():
    config = ChatDataConfig(me="x")
    with pytest.raises(UserError, match="JSON lines") as error:
        parse_export('{"a": 1}\n{"a": 2}\n', "log.jsonl", config)
    assert "not valid JSON" not in str(error.value)
    with pytest.raises(UserError, match="not valid JSON"):
        parse_export('{"a": 1,\n', "cut.json", config)


def test_bracketed_text_that_is_no_chat_is_refused_plainly():
    with pytest.raises(UserError, match="not a chat export") as error:
        parse_export("[12:30] notes to self\nbuy milk\n", "notes.txt", ChatDataConfig(me="x"))
    assert "JSON" not in str(error.value).split("(")[0]


def test_whatsapp_is_still_whatsapp():
    for name in ("whatsapp_ios.txt", "whatsapp_android.txt", "whatsapp_year_first.txt", "whatsapp_ko.txt"):
        assert imported(name).format == "whatsapp", name
    swedish_ios = "[2024-01-04 21:41:05] Bruno Costa: Hej!\n[2024-01-04 21:42:00] Ana Silva: Hej hej\n"
    assert parse_export(swedish_ios, "_chat.txt", ChatDataConfig(me="x")).format == "whatsapp"  # not signal-export


def test_google_chat_dates_in_another_language_keep_the_messages():
    messages = {"messages": [
        {"creator": {"name": "Bruno Costa", "user_type": "Human"}, "created_date": "Donnerstag, 4. Januar 2024 um 21:41:05 UTC", "text": "Hallo"},
        {"creator": {"name": "Ana Silva", "user_type": "Human"}, "created_date": "Donnerstag, 4. Januar 2024 um 21:42:05 UTC", "text": "Hi"}]}
    result = parse_export(json.dumps(messages), "Groups/DM x/messages.json", ChatDataConfig(me="Ana Silva"))
    assert result.format == "google-chat" and [m.text for m in result.conversations[0].messages] == ["Hallo", "Hi"]
    assert "2 date(s)" in result.note


@pytest.mark.parametrize("notice", [
    'Bruno Costa removed vote for "Pizza" in the poll: Dinner?.', 'You removed your vote for "Pizza" in the poll: Dinner?',
    'Bruno Costa voted for "Sushi" in the poll: Dinner where?.', 'Bruno changed their vote to "Sushi" in the poll: Dinner?.',
    'Ana added "Tacos" to the poll: Dinner?.', 'Ana removed the option "Tacos" from the poll: Dinner?.',
    "Ana created a poll: Dinner?.", "The poll Dinner? has ended."])
def test_messenger_poll_notices_never_reach_the_pairs(notice):
    from collections import Counter
    counts = Counter()
    assert Cleaner(ChatDataConfig(me="x"), counts).clean(notice) == ""
    assert counts["group/server notices dropped"] == 1


@pytest.mark.parametrize("poll", ["POLL:\nDinner?\nOPTION: Pizza (1 vote)\nOPTION: Sushi (0 votes)",
                                  "ENCUESTA:\n¿Cena?\nOPCIÓN: Pizza (2 votos)\nOPCIÓN: Sushi (0 votos)",
                                  "UMFRAGE:\nEssen?\nOPTION: Pizza (1 Stimme)"])
def test_whatsapp_polls_never_reach_the_pairs(tmp_path, poll):
    chat = tmp_path / "chat.txt"
    chat.write_text(f"[31/12/2023, 21:41:05] Bruno: Where shall we eat?\n[31/12/2023, 21:42:05] Bruno: {poll}\n"
                    f"[31/12/2023, 21:43:05] Ana Silva: Pizza!\n[31/12/2023, 21:44:05] Bruno: Ok\n"
                    f"[31/12/2023, 21:45:05] Ana Silva: {poll}\n", encoding="utf-8")
    report = main([str(chat), "--me=Ana Silva", f"--out={tmp_path / 'p.jsonl'}"])
    assert [{k: r[k] for k in ("input", "output")} for r in map(json.loads, (tmp_path / "p.jsonl").read_text(encoding="utf-8").splitlines())] == [
        {"input": "Where shall we eat?", "output": "Pizza!"}]
    assert report.counts["group/server notices dropped"] == 2


def test_a_list_with_a_colon_is_not_a_poll():
    from collections import Counter
    assert Cleaner(ChatDataConfig(me="x"), Counter()).clean("Shopping:\nmilk\nEggs: 6 (two boxes)") != ""


def test_from_the_command_line(tmp_path):
    """One real run of the command per archive kind: a Slack zip, a Skype tar."""
    out = tmp_path / "pairs.jsonl"
    result = subprocess.run([sys.executable, str(ROOT / "chat_data.py"), str(FIXTURES / "slack_export.zip"),
                             str(FIXTURES / "8_live_ana.silva_export.tar"), f"--me={ME}", f"--out={out}"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "slack_export.zip: slack," in result.stdout and "messages.json: skype," in result.stdout
    assert "Lunch" not in result.stdout  # message text never appears in the report
    assert len(out.read_text(encoding="utf-8").splitlines()) == 4


SLACK_KEYS = ["id", "name", "real_name", "profile", "is_bot", "members", "type", "user", "text", "ts", "thread_ts",
              "subtype", "bot_id", "files", "reactions", "user_profile", "display_name"]
SLACK_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                          lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(st.sampled_from(SLACK_KEYS), inner, max_size=5), max_leaves=20)


@settings(max_examples=60, deadline=None)
@given(users=SLACK_JSON, channels=SLACK_JSON, day=SLACK_JSON, raw=st.binary(max_size=30))
def test_a_broken_slack_export_raises_only_user_errors(users, channels, day, raw):
    files = {"users.json": json.dumps(users).encode, "channels.json": json.dumps(channels).encode,
             "dms.json": lambda: raw, "general/2024-01-04.json": json.dumps(day).encode, "D1/2024-01-04.json": lambda: raw}
    try:
        read_slack_export(files, "export.zip")
    except UserError:
        pass


HUGE_LINES = {"line": "2024/01/04(Thu)\n21:41\t" + "a\t" * 200_000, "line title": "[LINE] " + "x" * 800_000,
              "kakao": "2024년 1월 4일 오후 9:41, " + "a : " * 200_000, "kakao pc": "[B] [오후 9:41] " + "가" * 800_000,
              "signal reactions": "[2024-01-04 21:41:00] B: " + "(- " * 300_000,
              "signal stickers": "[2024-01-04 21:41:00] B: " + "(( " * 300_000}


@pytest.mark.slow
def test_new_readers_take_linear_time_on_a_huge_line():
    """Each new text reader on a ~1 MB line: linear patterns finish in a second or so; a pattern that
    rescans from every position would take minutes, and this subprocess would time out."""
    script = ("import sys\nsys.path.insert(0, 'tests')\nfrom chat.detect import TEXT_READERS\nfrom chat.options import ChatDataConfig\n"
              "from gptlib.errors import UserError\nfrom tests.test_chat_formats import HUGE_LINES\n"
              "for text in HUGE_LINES.values():\n"
              "    for name in ('line', 'kakaotalk', 'signal-markdown'):\n"
              "        try: TEXT_READERS[name](text, 'x', ChatDataConfig(me='x'))\n"
              "        except UserError: pass\nprint('done')")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert result.stdout.strip() == "done", result.stderr

"""Issue 26, the report: how much a chat model sounds like the person, on held-out conversations.
Style card, failures and copies on crafted replies (numbers asserted); the report of real tiny runs
(files, numbers, no message text, the gain over the start); the refusals. The blind page in a real
headless Chromium is in test_blind_page.py (slow)."""
import json

import pytest
import torch
from conftest import ROOT, tiny_run_args

import gpt_final_version
import model_handler
from chat.pipeline import main as chat_data
from gptlib import style_card
from gptlib.blind_test import blind_items, blind_page
from gptlib.errors import UserError
from gptlib.persona_report import ReportOptions, held_out, last_of_each_session, report_paths

FIXTURE = ROOT / "tests/fixtures/conversations/invented_choices.txt"


def test_the_style_card_counts_what_replies_look_like():
    card = style_card.style_card(["hi there?", "OK 😀", "yes | no", "fine, thanks!"])
    assert card["replies"] == 4
    assert card["mean_chars"] == pytest.approx((9 + 4 + 8 + 13) / 4)
    assert card["mean_words"] == pytest.approx((2 + 1 + 2 + 2) / 4)
    assert card["turns_joined"] == pytest.approx(5 / 4)  # "yes | no" is two messages sent in a row
    assert card["lower_case_share"] == pytest.approx(3 / 4)
    assert card["emoji_per_reply"] == pytest.approx(1 / 4)
    assert card["question_share"] == pytest.approx(1 / 4)
    assert card["punctuation_per_100_chars"] == pytest.approx(100 * 3 / 34)  # ? , ! (the | joining two messages is not punctuation)
    overlap = style_card.vocabulary_overlap(["tacos please", "hmm"], ["tacos please", "sure"])
    assert overlap["jaccard"] == pytest.approx(2 / 4) and overlap["generated_words_in_real_vocabulary"] == pytest.approx(2 / 3)


def test_failures_are_found_in_crafted_replies_and_not_in_plain_ones():
    replies = ["", "so so so so so so so so so", "Rui: see you at 8", "ok\x03", "<|im_end|>", "x" * 50,
               "hahahahahahahahahahahahahahahahahahahahahahaha", "see you at 8, Rui"]
    counts = style_card.failure_counts(replies, others=["Rui Costa"], longest=40)
    assert counts == {"empty": 1, "loop": 3, "overlong": 2, "markup": 2, "speaks_as_other": 1, "any": 7}
    assert style_card.failures_of("hello there", ["Rui Costa"], 40, cut_off=True) == {"overlong"}
    assert style_card.failures_of("yes, 8 is fine: see you", ["Rui Costa"], 40) == set()


def test_a_word_for_word_copy_is_found_and_shown_only_by_its_length():
    training = ["we could meet at the station at eight and walk over together", "hmm"]
    generated = ["ok we could meet at the station at eight and walk", "we could meet at the station", "hmm"]
    copies = style_card.copied_replies(generated, training, min_words=8)
    assert (copies["copies"], copies["replies"]) == (1, 3)
    assert copies["worst"] == [{"reply": 0, "copied_words": 10, "reply_words": 11, "reply_chars": len(generated[0])}]
    assert "station" not in json.dumps(copies)  # redacted: lengths only
    shown = style_card.copied_replies(generated, training, min_words=5, show_text=True)
    assert shown["copies"] == 2 and shown["worst"][0]["text"] == generated[0]


def test_the_blind_page_is_self_contained_and_a_message_cannot_end_its_data():
    examples = [{"context": [("them", "pasta or curry?")], "real": "curry </script><img src=x>", "model": "pasta"}] * 6
    page = blind_page(examples, seed=3)
    assert "</script><img" not in page and "http" not in page.replace('http-equiv', '')
    assert "src=" not in page.split("<script")[0]  # nothing loaded from elsewhere
    items = blind_items(examples, seed=3)
    assert {item["replies"][item["real"]] for item in items} == {"curry </script><img src=x>"}
    assert len({item["real"] for item in items}) == 2  # the real reply is not always on one side


def test_the_blind_test_takes_one_reply_a_session_so_no_context_gives_an_answer_away():
    examples = [{"session": 0, "reply": "a"}, {"session": 0, "reply": "b"}, {"session": 4, "reply": "c"}]
    picked = last_of_each_session(examples, ["x", "y", "z"])
    assert [(e["reply"], made) for e, made in picked] == [("b", "y"), ("c", "z")]  # b's context holds a


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny chat model trained from scratch (its report after the run), then one started from it."""
    folder = tmp_path_factory.mktemp("report")
    pairs = folder / "pairs.jsonl"
    chat_data([str(FIXTURE), "--me=Ana Silva", f"--out={pairs}"])
    first, second = folder / "first.pt", folder / "second.pt"
    gpt_final_version.main(tiny_run_args(pairs, first, max_iters=20, eval_interval=20, report_contexts=15))  # 4 x 15: every held-out reply scored
    gpt_final_version.main(tiny_run_args(pairs, second, max_iters=60, eval_interval=60, report_contexts=15,
                                         init_from=first, warmup_iters=5))
    return folder, pairs


def test_a_chat_run_writes_its_report_in_numbers_only(runs, capsys):
    folder, _ = runs
    paths = report_paths(folder / "first.pt")
    numbers = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert numbers["held_out"] == {"split": "time", "sessions": 30, "replies": 60, "scored": 60, "answered": 15,
                                   "training_replies": 540}  # 300 sessions: the newest tenth, 2 replies each
    assert "unigram" in numbers["bits_per_byte"]["start_is"]  # a run from random weights: the baseline says so
    assert numbers["bits_per_byte"]["gain"] > 0
    assert numbers["style"]["real"]["replies"] == numbers["failures"]["replies"] == 15
    for kind in ("md", "json"):  # the invented replies' words never reach the report files
        text = paths[kind].read_text(encoding="utf-8")
        assert not any(word in text for word in ("please", "hmm", "pasta", "tacos")), kind
    assert "please" in paths["html"].read_text(encoding="utf-8")  # the blind test holds text, by necessity
    assert numbers["blind_test"]["conversations"] == 15  # 15 replies spread over 30 sessions: one each


def test_the_report_gains_over_the_checkpoint_it_started_from(runs, capsys):
    folder, pairs = runs
    numbers = model_handler.main([str(folder / "second.pt"), "--report", "--report_contexts=4", "--device=cpu",
                                  "--show_text=true"])
    bpb = numbers["bits_per_byte"]
    assert str(folder / "first.pt") in bpb["start_is"] and bpb["gain"] > 0, bpb
    assert bpb["start"] == pytest.approx(json.loads(report_paths(folder / "first.pt")["json"].read_text())["bits_per_byte"]["model"])
    assert numbers["held_out"]["answered"] == 4 and "frequent" in numbers["style"]
    with pytest.raises(UserError, match="--report_contexts must be at least 1"):
        model_handler.main([str(folder / "second.pt"), "--report", "--report_contexts=0", "--device=cpu"])
    printed = capsys.readouterr().out
    assert "gain +" in printed and not any(word in printed for word in ("please", "pasta", "tacos"))


def test_a_text_model_is_refused_with_what_it_needs(tmp_path):
    with pytest.raises(UserError, match="the report is for a chat model"):
        model_handler.main([str(ROOT / "models/shakespeare_char.pt"), "--report", "--device=cpu"])


def test_too_few_replies_for_a_held_out_split_say_how_many_are_needed(tmp_path):
    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps({"input": "hi", "output": "hey"}) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match="needs at least 2"):
        held_out(str(one), {"tokenizer": "char"})
    with pytest.raises(UserError, match="--report_data"):
        held_out(str(tmp_path / "gone.jsonl"), {"tokenizer": "char"})


def test_a_reply_stops_where_the_model_starts_someone_elses_turn(runs):
    handler = model_handler.ModelHandler(str(runs[0] / "first.pt"), "cpu").load()
    opening, reply_mark = (handler.vocab.specials[m] for m in ("\x01", "\x02"))
    with torch.no_grad():
        handler.model.lm_head.bias[reply_mark] += 100.0  # the marker of my reply: never written, whatever its odds
        said = handler.reply("pasta or curry?", max_new_tokens=5, temperature=0)
        assert "\x02" not in said.text and said.text
        handler.model.lm_head.bias[opening] += 200.0  # the marker of their turn: the reply ends there
        said = handler.reply("pasta or curry?", max_new_tokens=5, temperature=0)
    assert (said.text, said.finish_reason) == ("", "stop")


def test_without_matplotlib_the_report_says_so_and_draws_nothing(runs, tmp_path, monkeypatch, capsys):
    import shutil

    from gptlib import report_files
    monkeypatch.setattr(report_files, "matplotlib_available", lambda: False)
    folder, pairs = runs
    shutil.copy(folder / "first.pt", tmp_path / "copy.pt")
    handler = model_handler.ModelHandler(str(tmp_path / "copy.pt"), "cpu").load()
    numbers = handler.report(ReportOptions(contexts=2, data=str(pairs)))
    paths = report_paths(tmp_path / "copy.pt")
    assert not paths["png"].exists() and "png" not in numbers["files"]
    assert "matplotlib is not installed" in paths["md"].read_text(encoding="utf-8")
    assert "no picture: pip install -r requirements-plot.txt" in capsys.readouterr().out

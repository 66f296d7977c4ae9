"""Issue 26: chats become conversations, laid out once for training and for every way of replying."""
import json

import pytest

from chat.pipeline import main as chat_data
from config import TrainConfig
from gptlib.chat_format import INPUT_MARK, OUTPUT_MARK, conversation_prompt, layout_pair
from gptlib.errors import UserError
from gptlib.run_data import conversation_pairs
from model_handler import ModelHandler

# Invented people; the last exchange's answer depends on a question three turns back.
CHAT = """\
01/03/2024, 18:00 - Rui Costa: dinner at 8 or 9?
01/03/2024, 18:01 - Ana Silva: let me check
01/03/2024, 18:05 - Rui Costa: and?
01/03/2024, 18:06 - Ana Silva: yes, 8 is fine
02/03/2024, 09:00 - Rui Costa: morning!
02/03/2024, 09:01 - Ana Silva: hi Rui
"""
GROUP = """\
05/03/2024, 10:00 - Rui Costa: who brings the cake?
05/03/2024, 10:01 - Eva Lopes: not me
05/03/2024, 10:02 - Ana Silva: I will
"""


def export(tmp_path, text, *options):
    (tmp_path / "chat.txt").write_text(text, encoding="utf-8")
    out = tmp_path / "pairs.jsonl"
    chat_data([str(tmp_path / "chat.txt"), "--me=Ana Silva", f"--out={out}", *options])
    return out, [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def test_sessions_end_at_a_silence_and_carry_their_earlier_turns(tmp_path):
    _, records = export(tmp_path, CHAT)
    assert [r["output"] for r in records] == ["let me check", "yes, 8 is fine", "hi Rui"]
    assert [t["text"] for t in records[1]["context"]] == ["dinner at 8 or 9?", "let me check", "and?"]
    assert [t["text"] for t in records[2]["context"]] == ["morning!"]  # 15 h of silence: a new session
    assert records[2]["session"] == 1 and records[1]["session"] == 0
    _, one_session = export(tmp_path, CHAT, "--session_gap_hours=24")
    assert len(one_session[2]["context"]) == 5


def test_a_served_conversation_is_exactly_the_prompt_training_built(tmp_path):
    path, _ = export(tmp_path, CHAT)
    their, mine = conversation_pairs(str(path), context_turns=6)[1]
    trained, learned = layout_pair(their, mine)
    messages = [{"role": "user", "content": "dinner at 8 or 9?"}, {"role": "assistant", "content": "let me check"},
                {"role": "user", "content": "and?"}]
    message, history = ModelHandler.exchanges(messages)  # what serving/server.py calls
    served = conversation_prompt(message, history, 6)  # what ModelHandler.reply_stream lays out
    assert trained == served + mine + "\x03"
    assert trained.count(INPUT_MARK) == 2 and sum(learned) == len(mine) + 1  # loss on my reply only
    single, _ = conversation_pairs(str(path), context_turns=1)[1]
    assert single == "and?"  # the single-exchange layout stays available


def test_context_turns_drop_the_oldest_turns_first():
    history = [("a", "b"), ("c", "d"), ("e", "f")]
    assert conversation_prompt("g", history, 3) == INPUT_MARK + "e" + OUTPUT_MARK + "f\x03" + INPUT_MARK + "g" + OUTPUT_MARK
    assert conversation_prompt("g", history, 1) == INPUT_MARK + "g" + OUTPUT_MARK
    assert conversation_prompt("g", history, 0).count(INPUT_MARK) == 4


def test_group_chat_speakers_are_named_as_the_openai_name_field_names_them(tmp_path):
    path, records = export(tmp_path, GROUP, "--group_chats=true")
    their, _ = conversation_pairs(str(path), context_turns=6)[0]
    assert their == "Rui Costa: who brings the cake?\nEva Lopes: not me"
    message, history = ModelHandler.exchanges([
        {"role": "user", "name": "Rui Costa", "content": "who brings the cake?"},
        {"role": "user", "name": "Eva Lopes", "content": "not me"}])
    assert (message, history) == (their, [])


def test_exclude_contacts_leaves_a_person_out_and_names_an_unknown_one(tmp_path, capsys):
    (tmp_path / "group.txt").write_text(GROUP, encoding="utf-8")
    (tmp_path / "chat.txt").write_text(CHAT, encoding="utf-8")
    out = tmp_path / "pairs.jsonl"
    report = chat_data([str(tmp_path / "chat.txt"), str(tmp_path / "group.txt"), "--me=Ana Silva", "--group_chats=true",
                        f"--out={out}", "--exclude_contacts=eva lopes,Nobody Here"])
    assert report.counts["messages left out by --exclude_contacts"] == 3
    assert "Eva" not in out.read_text(encoding="utf-8")
    printed = capsys.readouterr().out
    assert "'nobody here'" in printed and "left out 3 message(s)" in printed


@pytest.mark.parametrize("option", ["--session_gap_hours=0"])
def test_bad_session_gap_is_a_clear_error(tmp_path, option):
    with pytest.raises(UserError, match="session_gap_hours must be positive"):
        export(tmp_path, CHAT, option)


def test_bad_context_turns_is_a_clear_error():
    with pytest.raises(UserError, match="context_turns must not be negative"):
        TrainConfig(context_turns=-1).validate()


def test_the_newest_sessions_are_held_out_and_none_is_split(tmp_path):
    from gptlib.corpus import pairs_vocab
    from gptlib.run_data import session_order, time_split_dataset
    text = "".join(f"{d:02d}/03/2024, 18:00 - Rui Costa: q{d}\n{d:02d}/03/2024, 18:01 - Ana Silva: a{d}\n"
                   f"{d:02d}/03/2024, 18:02 - Rui Costa: r{d}\n{d:02d}/03/2024, 18:03 - Ana Silva: b{d}\n" for d in range(1, 21))
    path, _ = export(tmp_path, text)
    pairs = conversation_pairs(str(path), 6)
    sessions = session_order(str(path), len(pairs))
    assert len(sessions) == 20 and all(len(s) == 2 for s in sessions)
    dataset = time_split_dataset(pairs, sessions, pairs_vocab(pairs))
    assert sorted(mine for _, mine in dataset.pairs["val"]) == ["a19", "a20", "b19", "b20"]
    with pytest.raises(UserError, match="needs at least 2"):
        time_split_dataset(pairs[:2], sessions[:1], pairs_vocab(pairs))


def test_the_same_exchange_in_two_sessions_keeps_each_its_own_context(tmp_path):
    twice = CHAT + "04/03/2024, 18:00 - Rui Costa: and?\n04/03/2024, 18:01 - Ana Silva: yes, 8 is fine\n"
    _, records = export(tmp_path, twice)
    same = [r for r in records if r["output"] == "yes, 8 is fine"]
    assert [r["session"] for r in same] == [0, 2] and [len(r["context"]) for r in same] == [3, 1]


def test_the_importers_report_lists_pairs_per_contact(tmp_path, capsys):
    (tmp_path / "group.txt").write_text(GROUP, encoding="utf-8")
    (tmp_path / "chat.txt").write_text(CHAT, encoding="utf-8")
    chat_data([str(tmp_path / "chat.txt"), str(tmp_path / "group.txt"), "--me=Ana Silva", "--group_chats=true",
               f"--out={tmp_path / 'pairs.jsonl'}"])
    assert "pairs per contact: Rui Costa 3, group 1\n" in capsys.readouterr().out  # a group chat: by its title


SERVED = [{"role": "user", "content": "dinner at 8 or 9?"}, {"role": "assistant", "content": "let me check"},
          {"role": "user", "content": "and?"}]


def test_byte_level_pairs_are_conversations_served_exactly_as_trained(tmp_path):
    """BPE and GPT-2 chat models: the row training learns from is, token for token, the prompt the
    server builds for the same conversation, then the reply and END (the loss on those only)."""
    from gptlib import tokenizer
    from gptlib.corpus import PAD_TARGET, PairBatches
    from gptlib.run_data import laid_out_pairs

    path, _ = export(tmp_path, CHAT)
    pairs, laid_out = laid_out_pairs(str(path), context_turns=6)
    assert laid_out and laid_out_pairs(str(path), context_turns=1) == ([p[:2] for p in conversation_pairs(str(path), 1)], False)
    vocab = tokenizer.with_chat_markers(tokenizer.ByteBPE.train("dinner at 8 or 9? let me check and? yes, 8 is fine", 300))
    batches = PairBatches(pairs, vocab, seed=0, laid_out=True)
    row, first = batches.encode_pair(*pairs[1])
    message, history = ModelHandler.exchanges(SERVED)
    served = vocab.encode_with_specials(conversation_prompt(message, history, 6))  # ModelHandler._stream's ids
    assert row[:first].tolist() == served
    assert vocab.decode(row[first:].tolist()) == "yes, 8 is fine\x03"
    x, y = batches.batch_from([(row, first)], block_size=256)
    assert (y[0] != PAD_TARGET).sum() == len(row) - first  # loss on my reply and its END only


def test_a_hub_template_learns_the_conversation_as_the_persona_and_serves_it_the_same_way(tmp_path):
    """A chat template's rows: the persona's system prompt, the earlier exchanges as user and
    assistant turns, and the loss on the last reply and its end of turn only; ModelHandler's prompt
    for the same conversation (recent_history, persona_system) is the same ids."""
    from pathlib import Path
    SMOLLM2 = next((p / "shared/data/smollm2-135m-instruct" for p in Path(__file__).resolve().parents
                    if (p / "shared/data/smollm2-135m-instruct/tokenizer.json").is_file()), None)
    if SMOLLM2 is None:
        pytest.skip("no ../shared/data/smollm2-135m-instruct")
    pytest.importorskip("jinja2")
    from gptlib.chat_format import persona_prompt, recent_history
    from gptlib.chat_template import reply_prompt_ids
    from gptlib.hf_tokenizer import HubTokenizer
    from gptlib.run_data import laid_out_pairs, persona_of
    from gptlib.template_pairs import TemplatePairBatches

    path, records = export(tmp_path, CHAT)
    assert {r["me"] for r in records} == {"Ana Silva"} and persona_of(str(path)) == "Ana Silva"
    tokens = HubTokenizer.from_directory(SMOLLM2)
    system = persona_prompt("Ana Silva")
    pairs, laid_out = laid_out_pairs(str(path), context_turns=6)
    batches = TemplatePairBatches(pairs, tokens, seed=0, laid_out=laid_out, system=system)
    row, first = batches.encode_pair(*pairs[1])
    message, history = ModelHandler.exchanges(SERVED)
    assert row[:first].tolist() == reply_prompt_ids(tokens, message, recent_history(history, 6), system, 4096)
    assert tokens.decode(row[first:].tolist()) == "yes, 8 is fine<|im_end|>"


def test_byte_level_and_template_pairs_are_held_out_by_time_too(tmp_path):
    from gptlib.corpus import held_out_split
    from gptlib.run_data import laid_out_pairs, pairs_split

    path, _ = export(tmp_path, CHAT)
    pairs, _ = laid_out_pairs(str(path), context_turns=6)
    split = pairs_split(str(path), pairs, seed=0)
    assert [mine for _, mine in split["val"]] == ["hi Rui"]  # the newest session, whole
    assert [mine for _, mine in split["train"]] == ["let me check", "yes, 8 is fine"]
    plain = tmp_path / "plain.jsonl"  # written by hand: no sessions, the shuffled split
    plain.write_text("".join(json.dumps({"input": f"q{i}", "output": f"a{i}"}) + "\n" for i in range(10)), encoding="utf-8")
    rows = [(f"q{i}", f"a{i}") for i in range(10)]
    assert pairs_split(str(plain), rows, seed=3) == held_out_split(rows, 3)

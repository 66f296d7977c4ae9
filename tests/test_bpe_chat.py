"""Chat pairs in byte-level tokens (issue 13 item 4): batches of whole pairs with the markers as
special ids, the loss on the reply and the END only; LoRA fine-tuning from a GPT-2-vocabulary hub
directory (random tiny body, GPT-2's real tokenizer files) from the command line, then `--chat`,
ModelHandler.reply and one HTTP request to serve.py; and a BPE trained on the pairs does the same."""
import contextlib
import io
import json
import math
import threading
import urllib.request

import pytest
import torch
from test_gpt2_text import hub_dir  # noqa: F401  (the fixture: a random GPT-2-vocabulary hub directory)
from test_tokenizer import GPT2_DIR, needs_gpt2
from torch.nn import functional as F

import gpt_final_version
import model_handler
from config import GPTConfig
from gptlib import tokenizer
from gptlib.corpus import END_MARK, INPUT_MARK, OUTPUT_MARK, PAD_TARGET, PairBatches
from model_handler import ModelHandler
from serving.server import ServeConfig, make_server

# Invented people, invented words: a friend asks, "I" answer in my short way.
PAIRS = [(f"Hey Ottoline, are you free on day {i}?", f"yes, day {i} works, see you at the lake 🙂") for i in range(30)] + \
    [("did you feed Bramble?", "fed him twice, he still begs"), ("coffee later?", "always")]

RUN = ["--max_iters=6", "--warmup_iters=0", "--eval_interval=3", "--eval_iters=2", "--batch_size=4",
       "--block_size=48", "--device=cpu", "--compile=false", "--progress=false", "--notes=", "--samples_dir=",
       "--sample_chars=20", "--learning_rate=1e-2", "--report_contexts=0"]  # the report: test_persona_report.py


@pytest.fixture(scope="module")
def bpe():
    return tokenizer.ByteBPE.train(" ".join(a + " " + b for a, b in PAIRS), 300)


@pytest.fixture
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"input": a, "output": b}) + "\n" for a, b in PAIRS), encoding="utf-8")
    return path


def test_every_row_is_one_whole_pair_and_only_the_reply_and_end_are_targets(bpe):
    data = PairBatches(PAIRS, bpe)
    x, y = data.get_batch("train", 8, 64, torch.Generator().manual_seed(0))
    start, end = bpe.specials[INPUT_MARK], bpe.specials[END_MARK]
    for row_x, row_y in zip(x, y):
        assert row_x[0].item() == start  # a row starts where a pair starts
        learned = row_y[row_y != PAD_TARGET].tolist()
        assert learned[-1] == end and learned.count(end) == 1  # the reply, then the END, then nothing
        mine = next(b for a, b in PAIRS if bpe.decode(row_x.tolist()).startswith(INPUT_MARK + a + OUTPUT_MARK + b))
        assert bpe.decode(learned) == mine + END_MARK
        first = (row_y != PAD_TARGET).nonzero()[0].item()
        assert row_x[first].item() == bpe.specials[OUTPUT_MARK]  # the reply is predicted from the OUTPUT marker on
        assert (row_y[first:first + len(learned)] != PAD_TARGET).all()  # contiguous; the rest is padding
    assert (y[:, -1] != PAD_TARGET).any()  # padded to the longest row of the batch, no further


def test_typed_markers_are_text_never_the_special_ids(bpe):
    data = PairBatches([(END_MARK + "hi" + INPUT_MARK, "yo"), ("a", "b")], bpe)
    ids, first = data.encode_pair("x" + END_MARK, "y")
    assert ids.tolist().count(bpe.specials[END_MARK]) == 1  # only the layout's own END is special
    assert bpe.encode(END_MARK) != [bpe.specials[END_MARK]]


def test_a_long_pair_is_cut_from_the_left_keeping_the_reply(bpe):
    data = PairBatches([("word " * 200, "short reply"), ("a", "b")], bpe)
    ids, first = data.encode_pair("word " * 200, "short reply")
    x, y = data.batch_from([(ids, first)], 16)
    assert x.shape == (1, 16)
    assert bpe.decode(y[0][y[0] != PAD_TARGET].tolist()) == "short reply" + END_MARK


def test_the_loss_of_a_batch_is_the_mean_over_reply_and_end_tokens(bpe):
    data = PairBatches(PAIRS, bpe)
    torch.manual_seed(0)
    model = gpt_final_version.GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=64, vocab_size=len(bpe)))
    x, y = data.get_batch("train", 4, 64, torch.Generator().manual_seed(3))
    logits, loss = model(x, y)
    by_hand, count = 0.0, 0
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            if y[b, t] != PAD_TARGET:
                by_hand -= F.log_softmax(logits[b, t].double(), -1)[y[b, t]].item()
                count += 1
    assert count == (y != PAD_TARGET).sum().item() > x.shape[0]
    assert loss.item() == pytest.approx(by_hand / count, rel=1e-5)


def test_bits_per_byte_count_the_replies_bytes_and_one_for_the_end(bpe):
    data = PairBatches(PAIRS, bpe)
    replies = data.pairs["val"]
    tokens = sum(len(bpe.encode(mine)) + 1 for _, mine in replies)
    assert data.bytes_per_token("val") == pytest.approx(sum(len(m.encode()) + 1 for _, m in replies) / tokens)


def test_gpt2_gains_the_markers_as_three_appended_specials():
    gpt2 = tokenizer.GPT2Tokenizer.from_directory(str(GPT2_DIR)) if GPT2_DIR.is_dir() else pytest.skip("no GPT-2 files")
    chat = tokenizer.with_chat_markers(gpt2)
    assert [chat.specials[m] for m in (INPUT_MARK, OUTPUT_MARK, END_MARK)] == [50257, 50258, 50259]
    assert len(chat) == 50260 and chat.encode("Hello \x01\x02\x03") == gpt2.encode("Hello \x01\x02\x03")
    assert tokenizer.from_state(chat.state()).specials == chat.specials  # the checkpoint keeps them
    assert tokenizer.with_chat_markers(chat) is chat


def test_grown_rows_start_at_the_mean_and_tied_copies_stay_equal():
    from gptlib import build
    torch.manual_seed(0)
    table = torch.randn(10, 4)
    grown = build.extend_vocab_rows({"token_embedding.weight": table, "lm_head.weight": table,
                                     "blocks.0.w": torch.ones(10, 4)}, 13)
    assert torch.equal(grown["token_embedding.weight"][:10], table) and grown["blocks.0.w"].shape == (10, 4)
    assert torch.equal(grown["token_embedding.weight"], grown["lm_head.weight"])  # tied: the same rows
    new = grown["token_embedding.weight"][10:]
    assert (new - table.mean(0)).abs().max() < 0.5 * table.std()  # offsets of 0.1 std and not torch.equal(new[0], new[1])
    assert torch.equal(build.extend_vocab_rows({"lm_head.weight": table}, 13)["lm_head.weight"], grown["lm_head.weight"])


@contextlib.contextmanager
def serving(handler: ModelHandler):
    """serve.py's server on a free port, in a thread of this process; yields a request function."""
    server = make_server(handler, ServeConfig(port=0, default_tokens=8))
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def ask(path: str, body: dict | None = None) -> tuple[int, str]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{server.server_address[1]}{path}", data=data,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    try:
        yield ask
    finally:
        server.shutdown()
        server.server_close()


def check_serving(handler: ModelHandler) -> None:
    """The page, /health, /generate, and /v1/chat/completions whole and streamed all answer."""
    messages = [{"role": "user", "content": "are you free? 🙂"}]
    with serving(handler) as ask:
        assert ask("/")[0] == 200
        assert json.loads(ask("/health")[1])["kind"] == "chat"
        status, body = ask("/generate", {"text": "coffee later?", "seed": 1})
        assert status == 200 and isinstance(json.loads(body)["response"], str)
        status, body = ask("/v1/chat/completions", {"messages": messages, "seed": 1, "max_tokens": 6})
        answer = json.loads(body)
        assert status == 200 and isinstance(answer["choices"][0]["message"]["content"], str)
        # usage counts the model's byte-level tokens, not characters: the prompt as the layout encodes it
        prompt_ids = handler.vocab.encode_with_specials(INPUT_MARK + "are you free? 🙂" + OUTPUT_MARK)
        assert answer["usage"]["prompt_tokens"] == len(prompt_ids) != len("are you free? 🙂") + 2
        assert 1 <= answer["usage"]["completion_tokens"] <= 6
        assert answer["usage"]["total_tokens"] == len(prompt_ids) + answer["usage"]["completion_tokens"]
        status, body = ask("/v1/chat/completions", {"messages": messages, "seed": 1, "stream": True})
        assert status == 200 and body.rstrip().endswith("data: [DONE]")


def check_chats(out, monkeypatch=None, capsys=None):
    """ModelHandler replies, `--chat` answers two typed lines, and the server answers over HTTP."""
    handler = ModelHandler(str(out), "cpu").load()
    assert handler.is_chat_model
    assert handler.fit_to_vocabulary("naïve café 🙂" + END_MARK).text == "naïve café 🙂"  # bytes: nothing dropped
    reply = handler.reply("are you free on day 3?", max_new_tokens=8, seed=0)
    assert isinstance(reply.text, str) and END_MARK not in reply.text
    history = handler.chat(model_handler.SampleConfig(max_new_tokens=6, seed=0),
                           lines=["coffee later?", "did you feed Bramble? 🙂", ""], write=lambda line: None)
    assert [message for message, _ in history] == ["coffee later?", "did you feed Bramble? 🙂"]
    if monkeypatch is not None:  # the command line: two piped lines, each answered as it streams
        monkeypatch.setattr("sys.stdin", io.StringIO("coffee later?\nare you free on day 4?\n"))
        model_handler.main([str(out), "--chat", "--max_new_tokens=6", "--device=cpu"])
        printed = capsys.readouterr().out
        assert printed.count("you> ") == 2 and printed.count(f"{handler.name}> ") == 2
    check_serving(handler)


@needs_gpt2
def test_lora_chat_fine_tuning_from_a_gpt2_hub_directory_then_chat_and_serve(hub_dir, pairs_file, tmp_path, monkeypatch, capsys):  # noqa: F811
    _, folder = hub_dir
    out = tmp_path / "me-lora.pt"
    result = gpt_final_version.main([f"--init_from={folder}", f"--data={pairs_file}", "--lora_rank=8",
                                     f"--out={out}", *RUN])
    assert out.is_file() and result.history[-1][2] < result.history[0][2]  # held-out reply loss falls
    state = torch.load(out, weights_only=True)
    assert state["model_config"]["vocab_size"] == 50260 and "lora" in state
    assert all(t.shape[0] in (3, 8) or t.shape[1] == 8 for t in state["model"].values())  # no whole table
    assert state["model"]["token_embedding.lora_rows"].shape == (3, 32) and state["lora"]["rows_from"] == 50257
    handler = ModelHandler(str(out), "cpu").load()  # merged: one tied table whose marker rows learned
    assert handler.model.lm_head.weight is handler.model.token_embedding.weight
    assert torch.equal(handler.model.token_embedding.weight[50257:], state["model"]["token_embedding.lora_rows"])
    capsys.readouterr()
    check_chats(out, monkeypatch, capsys)
    again = gpt_final_version.main([f"--resume={out}", "--max_iters=8", f"--out={tmp_path / 'resumed.pt'}",
                                    "--progress=false", "--notes=", "--samples_dir=", "--sample_chars=0"])
    assert again.iters == 8  # the base is rebuilt with the same marker rows: the fingerprint matches


@needs_gpt2
def test_full_chat_fine_tuning_grows_tied_rows_from_the_mean(hub_dir, pairs_file, tmp_path):  # noqa: F811
    _, folder = hub_dir
    out = tmp_path / "me.pt"
    gpt_final_version.main([f"--init_from={folder}", f"--data={pairs_file}", f"--out={out}", *RUN])
    handler = ModelHandler(str(out), "cpu").load()
    assert handler.model.lm_head.weight is handler.model.token_embedding.weight  # still tied
    assert handler.vocab.specials[END_MARK] == 50259


def test_bpe_trained_on_the_pairs_trains_and_chats(pairs_file, tmp_path):
    out = tmp_path / "bpe.pt"
    result = gpt_final_version.main([f"--data={pairs_file}", "--tokenizer=bpe", "--vocab_size=300", "--n_layer=1",
                                     "--n_head=2", "--n_embd=32", f"--out={out}", *RUN])
    assert result.history and math.isfinite(result.history[-1][2])
    check_chats(out)


@pytest.mark.parametrize("tied", [True, False])
def test_trained_rows_compute_the_same_function_learn_alone_and_merge(tied):
    from gptlib import lora
    torch.manual_seed(0)
    config = GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=40, tie_embeddings=tied, dropout=0.0)
    model = gpt_final_version.GPT(config)
    idx = torch.randint(40, (2, 12))
    idx[:, 3] = 38  # an appended id as input
    before, _ = model(idx, idx)
    lora.add_adapters(model, 4, 8.0, rows_from=37)
    lora.freeze_all_but_adapters(model)
    logits, loss = model(idx, idx)
    assert torch.allclose(logits, before, atol=1e-6)  # adapters start at zero, rows at their values
    loss.backward()
    learning = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert "token_embedding.lora_rows" in learning and not any(n.endswith(".weight") for n in learning)
    with torch.no_grad():
        model.token_embedding.lora_rows.add_(1.0)
        if not tied:
            model.lm_head.lora_rows.sub_(0.5)
    wrapped, _ = model(idx, idx)
    lora.merge_adapters(model)
    merged, _ = model(idx, idx)
    assert torch.allclose(merged, wrapped, atol=1e-5)
    assert (model.lm_head.weight is model.token_embedding.weight) == tied

"""Every attention class (the lecture's per-Head one, the fused one) with every position kind
(learned, rotary) trains, samples past its context, resumes, chats and serves over real HTTP; and a
checkpoint moves between the two attention classes without changing what it computes."""
import json
import threading
import urllib.request

import pytest
import torch
from conftest import tiny_run_args

import gpt_final_version
from gptlib.checkpoint import load_checkpoint
from model_handler import ModelHandler
from serving.server import ServeConfig, make_server

COMBINATIONS = [(attention, position) for attention in ("heads", "fast") for position in ("learned", "rope")]
PAIRS = [("are you coming tonight?", "yes!! bringing cake"), ("what time?", "around 10"),
         ("lunch tomorrow?", "sure, 1pm"), ("call me later", "ok")] * 8
CONTEXT = 16


@pytest.fixture
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"input": a, "output": b}) + "\n" for a, b in PAIRS), encoding="utf-8")
    return path


def train(data, out, **options):
    return gpt_final_version.main(tiny_run_args(data, out, block_size=CONTEXT, **options))


def ask_over_http(handler: ModelHandler, message: str) -> dict:
    server = make_server(handler, ServeConfig(port=0, default_tokens=3 * CONTEXT))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        body = json.dumps({"messages": [{"role": "user", "content": message}], "seed": 1}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{server.server_address[1]}/v1/chat/completions",
                                         data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 200
            return json.loads(response.read())
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("attention, position", COMBINATIONS)
def test_trains_samples_past_its_context_resumes_chats_and_serves(pairs_file, tmp_path, attention, position):
    out = tmp_path / "m.pt"
    # the end-of-run sample answers a held-out message for up to 4 x the context: past block_size
    result = train(pairs_file, out, max_iters=12, attention=attention, position=position, sample_chars=4 * CONTEXT)
    assert result.iters == 12 and out.is_file()

    handler = ModelHandler(str(out), "cpu").load()
    samples = handler.generate("what", max_new_tokens=3 * CONTEXT, seed=1, use_cache=True)
    assert len(samples[0]) == len("what") + 3 * CONTEXT
    assert samples == handler.generate("what", max_new_tokens=3 * CONTEXT, seed=1, use_cache=False)

    resumed = train(pairs_file, tmp_path / "resumed.pt", resume=out, max_iters=15, sample_chars=0)
    assert resumed.iters == 15 and load_checkpoint(str(tmp_path / "resumed.pt"))["iter_num"] == 15

    answer = handler.reply("what time?", max_new_tokens=3 * CONTEXT, seed=1)
    assert answer.finish_reason in ("stop", "length") and answer.prompt_tokens <= CONTEXT

    reply = ask_over_http(handler, "what time?")
    assert isinstance(reply["choices"][0]["message"]["content"], str)
    assert reply["choices"][0]["finish_reason"] in ("stop", "length")


@pytest.mark.parametrize("position", ["learned", "rope"])
def test_a_checkpoint_moves_between_the_attention_classes(small_corpus, tmp_path, position):
    """Trained with the lecture's heads, then: sampled on the fast path (the same text for a seed),
    and resumed on the fast path (the same weights as resuming with heads, up to float rounding:
    the optimizer's moments are converted along with the weights)."""
    heads = tmp_path / "heads.pt"
    train(small_corpus, heads, max_iters=10, attention="heads", position=position, sample_chars=0)
    as_heads = ModelHandler(str(heads), "cpu").load()
    as_fast = ModelHandler(str(heads), "cpu", attention="fast").load()
    assert as_fast.model.config.attention == "fast"
    assert as_fast.generate("\n", 3 * CONTEXT, seed=3) == as_heads.generate("\n", 3 * CONTEXT, seed=3)

    train(small_corpus, tmp_path / "on_heads.pt", resume=heads, max_iters=20, sample_chars=0)
    train(small_corpus, tmp_path / "on_fast.pt", resume=heads, max_iters=20, sample_chars=0, attention="fast")
    on_heads = ModelHandler(str(tmp_path / "on_heads.pt"), "cpu").load()
    on_fast = ModelHandler(str(tmp_path / "on_fast.pt"), "cpu", attention="heads").load()
    for name, value in on_heads.model.state_dict().items():
        torch.testing.assert_close(on_fast.model.state_dict()[name], value, rtol=1e-4, atol=1e-5)

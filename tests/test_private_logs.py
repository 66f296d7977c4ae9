"""Nothing private in logs: the importer's report and errors, training's output and the server's log
and refusals hold counts, sizes, shapes and timings, never the text of a message, unless asked
(--log_text=true on each command)."""
from __future__ import annotations

import http.client
import json
import threading

import pytest
from conftest import tiny_run_args

import gpt_final_version
from chat.pipeline import main as chat_data
from gptlib.errors import UserError
from model_handler import ModelHandler
from serving.server import ServeConfig, make_server

SECRET = "my pin is 4242 and I live at Rua Secreta 9"
PAIRS = [("are you coming tonight?", "yes!! bringing cake"), ("what time?", "around 10"), ("lunch?", "sure, 1pm")] * 6


@pytest.fixture(scope="module")
def pairs_run(tmp_path_factory):
    """A tiny chat model trained on pairs whose held-out message is the secret (the last 10% are val)."""
    folder = tmp_path_factory.mktemp("private")
    pairs = folder / "me.jsonl"
    pairs.write_text("".join(json.dumps({"input": a, "output": b}) + "\n" for a, b in PAIRS + [(SECRET, SECRET)] * 3),
                     encoding="utf-8")
    return folder, pairs


def secret_words(text: str) -> list[str]:
    return [word for word in ("4242", "Secreta", "my pin") if word in text]


def test_training_on_pairs_prints_no_message_and_writes_no_sample_unless_asked(pairs_run, capsys):
    folder, pairs = pairs_run
    gpt_final_version.main(tiny_run_args(pairs, folder / "me.pt", max_iters=3, sample_chars=30, seed=3))
    printed = capsys.readouterr()
    assert "sample: a reply of" in printed.out
    assert not secret_words(printed.out + printed.err)
    assert not (folder / "samples").exists() or not list((folder / "samples").iterdir())
    gpt_final_version.main(tiny_run_args(pairs, folder / "asked.pt", max_iters=3, sample_chars=30, seed=3, log_text="true"))
    printed = capsys.readouterr()
    assert "--- sample" in printed.out and (folder / "samples" / "asked.txt").is_file()


def test_the_importers_errors_show_a_lines_shape_not_its_text(tmp_path, capsys):
    export = tmp_path / "notes.txt"
    export.write_text(SECRET + "\nsecond line\n", encoding="utf-8")
    with pytest.raises(UserError) as err:
        chat_data([str(export), "--me=Ana", f"--out={tmp_path / 'p.jsonl'}"])
    assert not secret_words(str(err.value)) and "shaped 'xx xxx xx 9999" in str(err.value)
    with pytest.raises(UserError, match="4242"):
        chat_data([str(export), "--me=Ana", f"--out={tmp_path / 'p.jsonl'}", "--log_text=true"])


def test_the_importers_report_names_files_and_counts_never_text(tmp_path, capsys):
    chat = tmp_path / "chat.txt"
    chat.write_text(f"01/03/2024, 09:00 - Bruno: {SECRET}?\n01/03/2024, 09:01 - Ana: {SECRET}!\n", encoding="utf-8")
    chat_data([str(chat), "--me=Ana", f"--out={tmp_path / 'p.jsonl'}", "--scrub_private=false"])
    assert not secret_words(capsys.readouterr().out)


def ask(port: int, method: str, path: str, body: bytes | None = None, headers=None) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    status, data = response.status, response.read()
    connection.close()
    return status, json.loads(data)


@pytest.mark.parametrize("log_text", [False, True])
def test_the_servers_log_and_refusals_hold_no_text_unless_asked(pairs_run, capsys, log_text):
    folder, pairs = pairs_run
    model = folder / "served.pt"
    if not model.exists():
        gpt_final_version.main(tiny_run_args(pairs, model, max_iters=2, sample_chars=0))
    handler = ModelHandler(str(model), "cpu").load()
    config = ServeConfig(port=0, batching=False, concurrency=2, max_tokens=5, log_text=log_text, max_body_bytes=4000)
    server = make_server(handler, config)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    try:
        capsys.readouterr()
        message = json.dumps({"messages": [{"role": "user", "content": SECRET}], "max_tokens": 3}).encode()
        assert ask(port, "POST", "/v1/chat/completions", message, {"Content-Length": str(len(message))})[0] == 200
        refusals = [("POST", "/generate", json.dumps({"text": SECRET, "max_new_tokens": "4242"}).encode()),
                    ("POST", "/generate", SECRET.encode()[:-3] + b"\xff\xfe"),  # not JSON, not UTF-8
                    ("POST", "/v1/chat/completions", json.dumps({"messages": [{"role": SECRET, "content": "x"}]}).encode()),
                    ("GET", "/my-pin-is-4242-Secreta", None)]
        for method, path, body in refusals:
            status, answer = ask(port, method, path, body, {"Content-Length": str(len(body or b""))})
            assert 400 <= status < 500 and set(answer) == {"error"} and answer["error"]["message"], answer
            if path == "/generate":
                assert not secret_words(answer["error"]["message"]), answer
        status, answer = ask(port, "PUT", "/generate", b"{}", {"Content-Length": "2"})
        assert status == 501 and set(answer) == {"error"}  # http.server's own refusals are JSON too
    finally:
        server.shutdown()
        server.server_close()
    log = capsys.readouterr().err
    assert log.count("\n") >= 5
    assert bool(secret_words(log)) == log_text, log

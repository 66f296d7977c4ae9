"""The chat model end to end: the terminal chat and the HTTP server, each in its own real process,
called over real sockets (urllib, raw http.client and the official openai client)."""
from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from conftest import ROOT, run_command, tiny_run_args

pytestmark = pytest.mark.slow  # real processes: the whole module is in the slow tier

PAIRS = [("are you coming tonight?", "yes!! bringing cake"), ("what time?", "around 10"),
         ("lunch tomorrow?", "sure, 1pm"), ("how was porto", "sunny and loud"), ("call me later", "ok")] * 6
SECRET = "my pin is 4242"  # text that must never reach the server's log


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("chat")
    pairs = folder / "me.jsonl"
    pairs.write_text("".join(json.dumps({"input": a, "output": b}) + "\n" for a, b in PAIRS + [(SECRET, "ok")]))
    out = folder / "me.pt"
    result = run_command("gpt_final_version.py", *tiny_run_args(pairs, out, max_iters=60, block_size=32))
    assert result.returncode == 0, result.stderr
    return out


class Server:
    """python serve.py CKPT --port=0 ... in a subprocess; the port comes from its first line."""

    def __init__(self, checkpoint: Path, *options: str):
        self.process = subprocess.Popen([sys.executable, "serve.py", str(checkpoint), "--port=0", "--device=cpu", *options],
                                        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = self.process.stdout.readline()
        assert "serving" in first, first + self.process.stderr.read()
        self.url = first.split(" on ")[1].strip()
        self.port = int(self.url.rsplit(":", 1)[1])

    def post(self, path: str, body, headers=None, raw: bytes | None = None):
        data = raw if raw is not None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json",
                                                                               **(headers or {})})
        return self._call(request)

    def get(self, path: str, headers=None):
        return self._call(urllib.request.Request(self.url + path, headers=headers or {}))

    @staticmethod
    def _call(request):
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def stop(self) -> str:
        self.process.terminate()
        _, log = self.process.communicate(timeout=30)
        return log


@pytest.fixture(scope="module")
def server(chat_model):
    running = Server(chat_model, "--max_tokens=100", "--max_body_bytes=2000", "--max_prompt_chars=500")
    yield running
    running.stop()


def assert_error(status, body, expected_status, fragment):
    assert status == expected_status, body
    assert set(body) == {"error"} and fragment in body["error"]["message"], body
    assert body["error"]["code"] == expected_status


def test_generate_answers_the_message(server):
    status, body = server.post("/generate", {"text": "what time?", "max_new_tokens": 30, "seed": 1})
    assert status == 200
    assert isinstance(body["response"], str) and len(body["response"]) <= 30
    assert body["finish_reason"] in ("stop", "length") and body["model"] == "me"
    again = server.post("/generate", {"text": "what time?", "max_new_tokens": 30, "seed": 1})[1]
    assert again["response"] == body["response"]  # the same seed, the same answer


def test_chat_completions_has_the_openai_shape(server):
    messages = [{"role": "system", "content": "ignored"}, {"role": "user", "content": "lunch tomorrow?"},
                {"role": "assistant", "content": "sure, 1pm"},
                {"role": "user", "content": [{"type": "text", "text": "how was porto"}]}]
    status, body = server.post("/v1/chat/completions", {"model": "me", "messages": messages, "max_tokens": 20})
    assert status == 200
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and len(choice["message"]["content"]) <= 20
    # a character model: one token a character; the prompt is the layout (five markers) of the last
    # block_size (32) characters, what the model read
    assert body["usage"]["completion_tokens"] == len(choice["message"]["content"])
    assert body["usage"]["prompt_tokens"] == min(32, len("lunch tomorrow?sure, 1pmhow was porto") + 5)
    assert server.get("/v1/models") == (200, {"object": "list", "data": [
        {"id": "me", "object": "model", "created": 0, "owned_by": "local"}]})


def test_the_official_openai_client_talks_to_it(server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    reply = client.chat.completions.create(model="me", messages=[{"role": "user", "content": "what time?"}],
                                           max_tokens=25, temperature=0.5)
    assert isinstance(reply.choices[0].message.content, str) and reply.model == "me"
    stream = client.chat.completions.create(model="me", messages=[{"role": "user", "content": "what time?"}],
                                            max_tokens=25, stream=True)
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert len("".join(pieces)) <= 25
    assert [m.id for m in client.models.list()] == ["me"]


def openai_client(running: Server):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=running.url + "/v1", api_key="unused", max_retries=0)


def test_completions_through_the_official_client(text_server):
    """The legacy /v1/completions: text in, text out, whole or streamed, with usage in the model's
    tokens (one a character here), echo, several prompts and n choices each."""
    client = openai_client(text_server)
    whole = client.completions.create(model="shakespeare_char", prompt="ROMEO:", max_tokens=30, seed=4)
    text = whole.choices[0].text
    assert whole.object == "text_completion" and whole.id.startswith("cmpl-") and whole.model == "shakespeare_char"
    assert len(text) == 30 and whole.choices[0].finish_reason == "length"
    assert (whole.usage.prompt_tokens, whole.usage.completion_tokens, whole.usage.total_tokens) == (6, 30, 36)
    chat = client.chat.completions.create(model="x", messages=[{"role": "user", "content": "ROMEO:"}], max_tokens=30,
                                          seed=4)
    assert chat.choices[0].message.content == text  # a text model continues a message as it does a prompt
    chunks = list(client.completions.create(model="x", prompt="ROMEO:", max_tokens=30, seed=4, stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 30 and chunks[-1].usage.total_tokens == 36
    assert all(c.usage is None for c in chunks[:-1])
    echoed = client.completions.create(model="x", prompt="ROMEO:", max_tokens=30, seed=4, echo=True)
    assert echoed.choices[0].text == "ROMEO:" + text
    several = client.completions.create(model="x", prompt=["ROMEO:", "JULIET:"], max_tokens=12, seed=4, n=2)
    assert [c.index for c in several.choices] == [0, 1, 2, 3]
    assert several.choices[0].text == text[:12]  # choice 0 has the request's seed, choice i the seed plus i
    alone = client.completions.create(model="x", prompt="JULIET:", max_tokens=12, seed=5)
    assert several.choices[3].text == alone.choices[0].text
    assert several.usage.prompt_tokens == 6 + 7 and several.usage.completion_tokens == 4 * 12


def test_a_stop_sequence_ends_the_reply_before_it_even_when_streamed(text_server, server):
    """A stop sequence of three characters is three tokens of the character model: the stream holds
    back what could begin it, and neither answer contains it or what follows it."""
    client = openai_client(text_server)
    reference = client.completions.create(model="x", prompt="ROMEO:", max_tokens=80, seed=7).choices[0].text
    stop = reference[20:23]
    cut = reference.find(stop)
    whole = client.completions.create(model="x", prompt="ROMEO:", max_tokens=80, seed=7, stop=["never~", stop])
    assert whole.choices[0].text == reference[:cut] and whole.choices[0].finish_reason == "stop"
    assert whole.usage.completion_tokens == cut + len(stop)  # the model wrote the stop sequence, then ended
    chunks = list(client.completions.create(model="x", prompt="ROMEO:", max_tokens=80, seed=7, stop=stop, stream=True))
    pieces = [c.choices[0].text for c in chunks]
    assert "".join(pieces) == reference[:cut] and chunks[-1].choices[0].finish_reason == "stop"
    assert not any(stop in piece for piece in pieces)
    chat = openai_client(server)
    question = [{"role": "user", "content": "what time?"}]
    answer = chat.chat.completions.create(model="me", messages=question, max_tokens=40, seed=3).choices[0].message.content
    if len(answer) >= 4:  # the tiny chat model's reply for this seed: cut it at its third character
        stopped = chat.chat.completions.create(model="me", messages=question, max_tokens=40, seed=3, stop=answer[2:4])
        assert stopped.choices[0].message.content == answer[:answer.find(answer[2:4])]
        assert stopped.choices[0].finish_reason == "stop"
        streamed = chat.chat.completions.create(model="me", messages=question, max_tokens=40, seed=3, stop=answer[2:4],
                                                stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in streamed) == stopped.choices[0].message.content


def test_n_choices_of_a_chat_completion_and_usage_in_its_stream(server):
    client = openai_client(server)
    question = [{"role": "user", "content": "lunch tomorrow?"}]
    three = client.chat.completions.create(model="me", messages=question, max_tokens=30, seed=11, n=3)
    singles = [client.chat.completions.create(model="me", messages=question, max_tokens=30, seed=11 + i)
               for i in range(3)]
    assert [c.index for c in three.choices] == [0, 1, 2]
    assert [c.message.content for c in three.choices] == [s.choices[0].message.content for s in singles]
    assert three.usage.prompt_tokens == singles[0].usage.prompt_tokens  # the prompt once, every choice's reply
    assert three.usage.completion_tokens == sum(s.usage.completion_tokens for s in singles)
    chunks = list(client.chat.completions.create(model="me", messages=question, max_tokens=30, seed=11, n=3,
                                                 stream=True, stream_options={"include_usage": True}))
    for choice in three.choices:
        deltas = [c.choices[0].delta for c in chunks if c.choices and c.choices[0].index == choice.index]
        assert deltas[0].role == "assistant" and "".join(d.content or "" for d in deltas) == choice.message.content
    assert chunks[-1].usage.model_dump() | {"completion_tokens_details": None, "prompt_tokens_details": None} == \
        three.usage.model_dump() | {"completion_tokens_details": None, "prompt_tokens_details": None}


@pytest.mark.parametrize("path, body, status, fragment", [
    ("/generate", {}, 400, "missing field 'text'"),
    ("/generate", {"text": 7}, 400, "'text' must be a string"),
    ("/generate", {"text": "hi", "max_new_tokens": "9"}, 400, "'max_new_tokens' must be an integer, got a string"),
    ("/generate", {"text": "hi", "max_new_tokens": True}, 400, "must be an integer, got true or false"),
    ("/generate", {"text": "hi", "n": 2}, 400, "n is for /v1/completions"),
    ("/generate", {"text": "hi", "stop": 5}, 400, "'stop' must be a string or a list of strings"),
    ("/generate", {"text": "hi", "max_new_tokens": 101}, 400, "between 1 and 100"),
    ("/generate", {"text": "hi", "temperature": -1}, 400, "temperature must be between"),
    ("/generate", {"text": "hi", "top_k": -2}, 400, "top_k must not be negative"),
    ("/generate", {"text": "a" * 600}, 400, "the limit is 500"),
    ("/generate", [1, 2], 400, "must be a JSON object, got list"),
    ("/v1/chat/completions", {"messages": "hi"}, 400, "'messages' must be a list"),
    ("/v1/chat/completions", {"messages": []}, 400, "must end with at least one message with role 'user'"),
    ("/v1/chat/completions", {"messages": [{"role": "user"}]}, 400, "content must be a string"),
    ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, 400, "is not user, assistant"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, 400, "between 1"),
    ("/v1/completions", {}, 400, "missing field 'prompt'"),
    ("/v1/completions", {"prompt": [464, 3290]}, 400, "token ids are not taken: send the text"),
    ("/v1/completions", {"prompt": []}, 400, "'prompt' is an empty list"),
    ("/v1/completions", {"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, 400, "at most 4 sequences, got 5"),
    ("/v1/completions", {"prompt": "x", "stop": [""]}, 400, "each stop sequence must have 1 to"),
    ("/v1/completions", {"prompt": "x", "n": 0}, 400, "n must be between 1 and 8, got 0"),
    ("/v1/completions", {"prompt": ["a", "b", "c"], "n": 3}, 400, "3 prompts x n=3 make 9 choices; the limit is 8"),
    ("/v1/completions", {"prompt": "x", "echo": "yes"}, 400, "'echo' must be true or false, got a string"),
    ("/v1/completions", {"prompt": "x", "stream_options": {"include_usage": True}}, 400, "only allowed with"),
    ("/v1/completions", {"prompt": "x", "stream": True, "stream_options": {"include_usage": 1}}, 400,
     "'stream_options.include_usage' must be true or false, got an integer"),
    ("/v1/completions", {"prompt": "x", "suffix": "!"}, 400, "suffix (insertion) is not supported"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "top_p": 0.5}, 400, "use top_k"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "n": 9}, 400, "between 1 and 8"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "model": 3}, 400, "'model' must be a string"),
    ("/nowhere", {}, 404, "no such endpoint"),
])
def test_bad_requests_get_a_json_error(server, path, body, status, fragment):
    assert_error(*server.post(path, body), status, fragment)


def test_an_error_names_the_field_at_fault_and_the_openai_client_raises_it(server):
    status, body = server.post("/v1/completions", {"prompt": "x", "n": "two"})
    assert status == 400 and body["error"]["param"] == "n" and body["error"]["type"] == "invalid_request_error"
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="stop may hold at most 4 sequences"):
        client.completions.create(model="me", prompt="hi", stop=["a", "b", "c", "d", "e"])
    status, body = server.post("/generate", None, raw=b'{"text": ')
    assert status == 400 and body["error"]["param"] is None and "not valid JSON" in body["error"]["message"]


def test_the_issue_curl_gets_an_answer(server):
    """curl -X POST localhost:8000/generate -H "Content-Type: application/json" -d '{"text": "hello, how are you?"}'"""
    status, body = server.post("/generate", None, raw=b'{"text": "hello, how are you?"}')
    assert status == 200 and isinstance(body["response"], str) and body["finish_reason"] in ("stop", "length")


def test_characters_the_model_never_saw_are_replaced_or_left_out_and_reported(server):
    """The chat model saw only lower case, some punctuation and the digits 0-4: an upper-case or
    accented letter is read as its plain lower-case form, an emoji or a snowman is left out."""
    text = "Hello, Caké 9 😀 ☃ how was porto?"
    status, body = server.post("/generate", {"text": text, "max_new_tokens": 10, "seed": 1})
    assert status == 200 and isinstance(body["response"], str)
    assert body["dropped_characters"] == ["9", "☃", "😀"]
    assert body["replaced_characters"] == {"C": "c", "H": "h", "é": "e"}
    read_as = server.post("/generate", {"text": "hello, cake   how was porto?", "max_new_tokens": 10, "seed": 1})[1]
    assert read_as["response"] == body["response"] and read_as["dropped_characters"] == []  # what the model read
    status, chat = server.post("/v1/chat/completions", {"messages": [
        {"role": "user", "content": "lunch ✨"}, {"role": "assistant", "content": "Sure"},
        {"role": "user", "content": "what time? \x01\x03"}], "max_tokens": 10})
    assert status == 200 and chat["dropped_characters"] == ["\x01", "\x03", "✨"]  # markers are never text
    assert chat["replaced_characters"] == {"S": "s"}


def test_a_text_model_reads_what_it_can_and_the_stream_says_what_it_left_out(text_server):
    status, body = text_server.post("/generate", {"text": "hello 5 🙂", "max_new_tokens": 20})
    assert status == 200 and len(body["response"]) == 20 and body["dropped_characters"] == ["5", "🙂"]
    connection = http.client.HTTPConnection("127.0.0.1", text_server.port, timeout=60)
    connection.request("POST", "/v1/chat/completions", json.dumps(
        {"messages": [{"role": "user", "content": "ROMEO: 2 roses 🌹, ma’am"}], "max_tokens": 9, "stream": True}),
        {"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200
    assert json.loads(response.getheader("X-Dropped-Characters")) == ["2", "🌹"]
    assert json.loads(response.getheader("X-Replaced-Characters")) == {"’": "'"}
    first = json.loads(response.read().decode().split("\n\n")[0][len("data: "):])
    assert first["dropped_characters"] == ["2", "🌹"] and first["replaced_characters"] == {"’": "'"}
    connection.close()


def ask_at_once(running: Server, requests: list[dict]) -> list:
    """Send every request at the same time, each from its own thread; the (status, body) of each."""
    answers = [None] * len(requests)

    def ask(i):
        answers[i] = running.post("/generate", requests[i])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return answers


def test_a_compiled_server_gives_the_same_answers(chat_model, server):
    """--compile=true compiles the decode step at start-up; replies are the same for a seed. Here
    unbatched (CompiledDecoder, one graph): tests/test_engine.py compiles the batch's graphs."""
    compiled = Server(chat_model, "--compile=true", "--batching=false", "--concurrency=1")
    try:
        requests = [{"text": text, "max_new_tokens": 30, "seed": seed}
                    for text in ("what time?", "lunch tomorrow?") for seed in (1, 2)]
        answers = ask_at_once(compiled, requests)  # one at a time: they take turns
    finally:
        log = compiled.stop()
    for request, (status, body) in zip(requests, answers):
        assert status == 200 and body["response"] == server.post("/generate", request)[1]["response"]
    assert "Traceback" not in log


def test_replies_decoded_in_one_batch_are_those_of_replies_decoded_alone(chat_model, server):
    """The default server decodes the replies in progress together (continuous batching); with
    --batching=false each reply has a thread of its own. For a seed, the same words either way."""
    requests = [{"text": text, "max_new_tokens": 40, "seed": seed}
                for text in ("what time?", "lunch tomorrow?", "Vens hoje?? Somos 5 🍷") for seed in (1, 2, 3)]
    alone = Server(chat_model, "--batching=false", "--concurrency=2")
    try:
        unbatched = ask_at_once(alone, requests)
    finally:
        alone.stop()
    batched = ask_at_once(server, requests)
    assert all(status == 200 for status, _ in batched + unbatched)
    assert [body["response"] for _, body in batched] == [body["response"] for _, body in unbatched]


def test_malformed_and_oversized_bodies(server):
    assert_error(*server.post("/generate", None, raw=b'{"text": '), 400, "not valid JSON")
    assert_error(*server.post("/generate", None, raw=b"\xff\xfe"), 400, "not valid JSON")
    assert_error(*server.post("/generate", None, raw=b"x" * 2001), 413, "the limit is 2000")
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.putrequest("POST", "/generate")
    connection.endheaders()  # no Content-Length, no body
    response = connection.getresponse()
    assert response.status == 411 and "Content-Length" in json.loads(response.read())["error"]["message"]
    assert server.get("/health")[0] == 200  # still serving after all of the above


def test_api_key_is_required_on_every_endpoint_when_set(chat_model):
    secured = Server(chat_model, "--api_key=s3cret")
    try:
        for call in (lambda h: secured.get("/v1/models", h), lambda h: secured.post("/generate", {"text": "hi"}, h)):
            assert_error(*call({}), 401, "API key")
            assert_error(*call({"Authorization": "Bearer wrong"}), 401, "API key")
            assert_error(*call({"Authorization": "s3cret"}), 401, "API key")
            assert call({"Authorization": "Bearer s3cret"})[0] == 200
        with urllib.request.urlopen(secured.url + "/", timeout=30) as page:  # the page asks for the key itself
            html = page.read().decode()
            assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
            assert "default-src 'self'" in page.headers["Content-Security-Policy"]  # nothing loaded from elsewhere
        assert "/v1/chat/completions" in html and "<script src" not in html and "http" not in html.split("<script>")[1]
    finally:
        secured.stop()


def test_concurrent_clients_all_get_well_formed_answers_and_the_log_holds_no_text(chat_model):
    running = Server(chat_model, "--concurrency=2", "--queue_timeout=60")
    statuses, problems = Counter(), []

    def client(n):
        for i in range(12):
            status, body = running.post("/generate", {"text": SECRET, "max_new_tokens": 8, "seed": n * 100 + i})
            statuses[status] += 1
            if status != 200 or not isinstance(body.get("response"), str):
                problems.append((status, body))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    log = running.stop()
    assert not problems and statuses == {200: 192}
    assert log.count("POST /generate 200") == 192
    assert SECRET not in log and "4242" not in log


def test_beyond_capacity_requests_get_503_not_a_hang(chat_model):
    running = Server(chat_model, "--concurrency=1", "--queue_timeout=0.01", "--max_tokens=400")
    results = []

    def client():
        results.append(running.post("/generate", {"text": "what time?", "max_new_tokens": 400, "temperature": 2}))

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    running.stop()
    statuses = Counter(status for status, _ in results)
    assert len(results) == 8 and set(statuses) <= {200, 503} and statuses[503] >= 1, statuses
    for status, body in results:
        if status == 503:
            assert "busy" in body["error"]["message"]


def test_server_refuses_a_bad_checkpoint_and_option(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    result = run_command("serve.py", bad)
    assert result.returncode != 0 and "Traceback" not in result.stderr and "error:" in result.stderr
    result = run_command("serve.py", bad, "--prot=80")
    assert result.returncode != 0 and "--port" in result.stderr


def test_terminal_chat_through_a_subprocess(chat_model):
    conversation = "what time?\nlunch tomorrow? ☃\n\nnever read\n"
    result = subprocess.run([sys.executable, "model_handler.py", str(chat_model), "--chat", "--max_new_tokens=40",
                             "--device=cpu"], cwd=ROOT, input=conversation, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("chatting with") and "empty line" in lines[0]
    assert lines[1] == "you> what time?" and lines[2].startswith("me> ")
    assert lines[3] == "you> lunch tomorrow? ☃"
    assert lines[4] == "(left out characters this model never saw: '☃')" and lines[5].startswith("me> ")
    assert "never read" not in result.stdout  # the empty line ended the conversation
    assert all(len(line) <= len("me> ") + 40 for line in lines if line.startswith("me> "))


def test_chat_refuses_a_model_not_trained_on_pairs():
    result = run_command("model_handler.py", ROOT / "models/shakespeare_char.pt", "--chat")
    assert result.returncode != 0 and "not trained on chat pairs" in result.stderr and "Traceback" not in result.stderr


def test_a_generation_past_the_timeout_returns_what_it_has():
    """The Shakespeare model never stops by itself; with a 1 ms budget it returns after its first
    few characters (the clock is read after each), marked "length"; without the limit it gets all 300."""
    running = Server(ROOT / "models/shakespeare_char.pt", "--timeout=0.001")
    try:
        status, body = running.post("/generate", {"text": "ROMEO:", "max_new_tokens": 300, "seed": 1})
    finally:
        running.stop()
    assert status == 200 and body["finish_reason"] == "length"
    assert 0 < len(body["response"]) < 100
    unhurried = Server(ROOT / "models/shakespeare_char.pt")
    try:
        status, body = unhurried.post("/generate", {"text": "ROMEO:", "max_new_tokens": 300, "seed": 1})
    finally:
        unhurried.stop()
    assert status == 200 and len(body["response"]) == 300 and body["finish_reason"] == "length"


@pytest.fixture(scope="module")
def text_server():
    running = Server(ROOT / "models/shakespeare_char.pt", "--concurrency=1")
    yield running
    running.stop()


def stream_events(port: int, body: dict) -> list[dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200 and response.getheader("Content-Type").startswith("text/event-stream")
    lines = response.read().decode("utf-8").split("\n\n")
    connection.close()
    assert lines[-2:] == ["data: [DONE]", ""]
    return [json.loads(line[len("data: "):]) for line in lines[:-2]]


def test_streaming_sends_the_reply_in_pieces_as_it_is_made(text_server):
    request = {"model": "shakespeare_char", "messages": [{"role": "user", "content": "ROMEO:"}], "max_tokens": 100,
               "seed": 3}
    events = stream_events(text_server.port, request | {"stream": True})
    deltas = [e["choices"][0]["delta"] for e in events]
    assert deltas[0] == {"role": "assistant", "content": ""} and deltas[-1] == {}
    pieces = [d["content"] for d in deltas[1:-1]]
    assert len(pieces) == 100 and all(pieces)  # each character as soon as it is sampled
    assert events[-1]["choices"][0]["finish_reason"] == "length"
    assert {e["object"] for e in events} == {"chat.completion.chunk"} and len({e["id"] for e in events}) == 1
    status, whole = text_server.post("/v1/chat/completions", request)
    assert "".join(pieces) == whole["choices"][0]["message"]["content"]  # the same seed, the same text


def test_a_client_that_leaves_mid_stream_frees_its_slot(text_server):
    """With one generation slot, a stream abandoned after its first event must not block the next request."""
    import socket

    body = json.dumps({"messages": [{"role": "user", "content": "ROMEO:"}], "max_tokens": 1000, "stream": True})
    with socket.create_connection(("127.0.0.1", text_server.port), timeout=30) as raw:
        raw.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
        assert raw.recv(4096).startswith(b"HTTP/1.1 200")
    status, answer = text_server.post("/generate", {"text": "JULIET:", "max_new_tokens": 20})
    assert status == 200 and len(answer["response"]) == 20


@pytest.mark.parametrize("device, slots", [("mps", 1), ("cpu", 4), ("cuda:0", 4)])
def test_on_mps_the_server_generates_one_at_a_time(device, slots):
    """Two threads running mps kernels at once can kill the process inside Metal."""
    from serving import server as serve

    config, note = serve.for_device(serve.ServeConfig(concurrency=4), device)
    assert config.concurrency == slots
    assert (note is not None) is (device == "mps")
    service = serve.Service(handler=None, config=config)
    acquired = [service.slots.acquire(blocking=False) for _ in range(4)]
    assert sum(acquired) == slots


def test_sigterm_lets_the_requests_being_answered_finish_then_stops(chat_model):
    """kill / docker stop send SIGTERM: the server stops listening, the reply in progress is still
    sent and logged, and the process ends with status 0."""
    running = Server(chat_model, "--batching=false", "--temperature=2", "--max_tokens=600")
    results = []
    asking = threading.Thread(target=lambda: results.append(
        running.post("/generate", {"text": "what time?", "max_new_tokens": 600, "temperature": 2})))
    asking.start()
    time.sleep(1.0)  # the request has been read (and is being answered, or already answered: both must pass)
    running.process.terminate()
    asking.join(timeout=60)
    _, log = running.process.communicate(timeout=60)
    assert results and results[0][0] == 200 and results[0][1]["finish_reason"] in ("stop", "length")  # (may be empty: no seed)
    assert "POST /generate 200" in log and running.process.returncode == 0

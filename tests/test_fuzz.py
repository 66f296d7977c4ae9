"""Fuzzed, not only tested: exports of every supported format mutated (random bytes, truncation,
broken encodings, huge lines, deep JSON, zip bombs, path traversal in archives) through the whole
command, and requests of every kind to the server (random JSON, wrong types, huge numbers,
invalid UTF-8, slow and half-closed connections). Whatever arrives: no traceback, no hang, nothing
written outside --out, every refusal one clear message.

CI runs a fixed number of examples; GPT_FUZZ=N multiplies them for a longer hunt:

    GPT_FUZZ=100 python -m pytest -q tests/test_fuzz.py --hypothesis-show-statistics
"""
from __future__ import annotations

import io
import json
import socket
import threading
import time
import zipfile
from pathlib import Path

import pytest
from conftest import fuzz
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from chat.pipeline import main as chat_data
from gptlib.errors import UserError

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "chats"
EXPORTS = sorted(p for p in FIXTURES.rglob("*") if p.is_file() and p.name != "facts.json")
SEEDS = {p.relative_to(FIXTURES).as_posix(): p.read_bytes() for p in EXPORTS}
FORMAT_OPTIONS = {"generic.csv": ["--columns=sender=Author,text=Content,time=Date"]}
SLOW_SECONDS = 30  # one export of at most a few hundred kB read in more than this is a hang


def mutate(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    """Each edit (position, bytes removed, bytes inserted) applied in turn, positions wrapped."""
    for position, removed, inserted in edits:
        at = position % (len(data) + 1)
        data = data[:at] + inserted + data[at + removed:]
    return data


BROKEN_BYTES = st.sampled_from([b"\xff", b"\xfe\xff", b"\xc3", b"\xe2\x80", b"\x00", b"\xed\xa0\x80", b"\r", b"\x1b[2J",
                                b"\n", b'"', b"{", b"]", b",", b"<", b"</div>", b"\xef\xbb\xbf", b"\\u0000", b"\\ud800"])
EDITS = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 64), BROKEN_BYTES | st.binary(max_size=16)), max_size=6)


def transform(data: bytes, how: str) -> bytes:
    if how == "truncated":
        return data[: len(data) // 3]
    if how == "utf-16":
        return data.decode("utf-8", "replace").encode("utf-16")
    if how == "latin-1 half":
        half = len(data) // 2
        return data[:half] + data[half:].decode("utf-8", "replace").encode("latin-1", "replace")
    if how == "huge line":
        middle = data.find(b"\n", len(data) // 2) + 1
        return data[:middle] + b"x" * 300_000 + data[middle:]
    if how == "deep json":
        return b"[" * 50_000 + b"]" * 50_000 if data.lstrip()[:1] in (b"{", b"[") else data
    return data


def run_chat_data(tmp_path: Path, name: str, data: bytes, *options: str) -> None:
    """chat_data.py's main on the bytes: a UserError (the one-line message) or a run; no other
    exception, nothing written but --out, and no hang."""
    work = tmp_path / f"run{time.monotonic_ns()}"
    work.mkdir()
    export = work / Path(name).name
    export.write_bytes(data)
    out = work / "out" / "pairs.jsonl"
    before = set(work.rglob("*"))
    started = time.monotonic()
    try:
        chat_data([str(export), "--me=Ana Silva,Ana,Me", f"--out={out}", *options])
    except UserError as err:
        assert str(err) and "\n" not in str(err).strip() and "Traceback" not in str(err)
    assert time.monotonic() - started < SLOW_SECONDS
    assert set(work.rglob("*")) - before <= {out, out.parent}


@pytest.mark.parametrize("names", [sorted(SEEDS)[i::4] for i in range(4)], ids=["a", "b", "c", "d"])
@fuzz(20, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data(), edits=EDITS, how=st.sampled_from(["", "", "truncated", "utf-16", "latin-1 half", "huge line", "deep json"]))
def test_mutated_exports_of_every_format_give_pairs_or_one_clear_error(tmp_path, capsys, names, data, edits, how):
    """Each of the fixture exports (a quarter of them per test) is the seed of some examples."""
    name = data.draw(st.sampled_from(names))
    run_chat_data(tmp_path, name, mutate(transform(SEEDS[name], how), edits), *FORMAT_OPTIONS.get(name, []))
    assert "Traceback" not in capsys.readouterr().err


def zip_bytes(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


MEMBER_NAMES = st.sampled_from(["_chat.txt", "../../escaped.txt", "/etc/chat.txt", "a/../../b.txt", "C:\\\\x\\\\chat.txt",
                                "chat.json", "..", "x/" * 40 + "deep.txt", "nested.zip", "photo.jpg", "._chat.txt", "\u202echat.txt"])


@fuzz(15, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(members=st.dictionaries(MEMBER_NAMES, st.sampled_from(sorted(SEEDS)).map(SEEDS.get) | st.binary(max_size=200),
                               min_size=1, max_size=5),
       edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 8), st.binary(max_size=4)), max_size=2))
def test_archives_with_hostile_member_names_write_nothing_outside_out(tmp_path, members, edits):
    run_chat_data(tmp_path, "export.zip", mutate(zip_bytes(members), edits))
    assert not (tmp_path.parent / "escaped.txt").exists() and not (tmp_path.parent / "b.txt").exists()


def test_a_zip_bomb_is_refused_before_it_is_unpacked(tmp_path):
    """30 MB of one repeated line packs into 30 kB: refused by its compression ratio, not read."""
    line = b"01/03/2024, 09:00 - Bruno: " + b"a" * 100 + b"\n"
    bomb = zip_bytes({"_chat.txt": line * (30_000_000 // len(line))})
    assert len(bomb) < 1_000_000
    started = time.monotonic()
    with pytest.raises(UserError, match="zip bomb"):
        run_chat_data_raises(tmp_path, bomb)
    assert time.monotonic() - started < 10
    nested = zip_bytes({"inner.zip": bomb, "_chat.txt": b"01/03/2024, 09:00 - Bruno: hi\n01/03/2024, 09:01 - Ana: ok\n"})
    run_chat_data(tmp_path, "nested.zip", nested)  # an archive inside one is listed as skipped, never opened


def run_chat_data_raises(tmp_path: Path, data: bytes) -> None:
    export = tmp_path / "bomb.zip"
    export.write_bytes(data)
    chat_data([str(export), "--me=Ana", f"--out={tmp_path / 'pairs.jsonl'}"])


# ----------------------------------------------------------------------------------------------
# The server: requests of every kind, on a real socket


@pytest.fixture(scope="module")
def fuzz_server():
    """The shipped Shakespeare model (a text model: /v1/chat/completions continues the text), nothing trained."""
    from model_handler import ModelHandler
    from serving.server import ServeConfig, make_server

    model = Path(__file__).resolve().parents[1] / "models" / "shakespeare_char.pt"
    handler = ModelHandler(str(model), "cpu").load()
    config = ServeConfig(port=0, batching=False, concurrency=2, max_tokens=8, read_timeout=0.5, timeout=5.0,
                         queue_timeout=5.0, max_body_bytes=20_000)
    server = make_server(handler, config)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def exchange(port: int, raw: bytes, half_close: bool = True, pause: float = 0.0) -> bytes:
    """Send raw bytes (half-closing the socket after, or pausing midway), read the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        if pause:
            sock.sendall(raw[: len(raw) // 2])
            time.sleep(pause)
            raw = raw[len(raw) // 2:]
        sock.sendall(raw)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def assert_one_clear_answer(answer: bytes, may_be_empty: bool = True) -> None:
    """Nothing (where the bytes held no request line), or HTTP answers (several where the bytes
    held several requests): each a JSON error of 4xx/5xx with a message, a JSON 200, the page or a
    stream; never a 500."""
    assert answer or may_be_empty, "no answer"
    while answer:
        if answer.startswith(b"{"):  # an HTTP/0.9 request ("GET /x", no version) gets the body alone
            assert set(json.loads(answer)) == {"error"}
            return
        head, _, rest = answer.partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n")[0]
        assert status_line.startswith(b"HTTP/1."), answer[:200]
        status = int(status_line.split()[1])
        assert status != 500, answer[:300]
        if b"text/event-stream" in head:
            assert status == 200 and rest.rstrip().endswith(b"data: [DONE]"), answer[-300:]
            return
        lengths = [line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
        assert lengths, head
        body, answer = rest[: int(lengths[0])], rest[int(lengths[0]):]
        if b"text/html" in head:
            assert status == 200 and b"<html" in body.lower()  # the chat page
            continue
        if not body:
            continue  # HEAD: headers only
        payload = json.loads(body.decode("utf-8"))
        if status == 200:
            assert "error" not in payload
        else:
            assert 400 <= status < 600 and set(payload) == {"error"} and payload["error"]["message"], payload


JSON_LEAVES = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.sampled_from([10**400, -(10**30), 0, 1, 2**63])
               | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20)
               | st.text(st.characters(codec=None, exclude_categories=()), max_size=8))  # lone surrogates too
JSON_ANY = st.recursive(JSON_LEAVES, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                        max_leaves=8)
FIELDS = st.sampled_from(["text", "messages", "max_tokens", "max_new_tokens", "max_completion_tokens", "temperature",
                          "top_k", "seed", "stream", "model", "role", "content"])
MESSAGES = st.lists(st.fixed_dictionaries({}, optional={"role": st.sampled_from(["user", "assistant", "system", "tool", "x"]) | JSON_LEAVES,
                                                        "content": st.text(max_size=30) | JSON_ANY}), max_size=4)
BODIES = st.dictionaries(FIELDS, JSON_ANY, max_size=5) | st.fixed_dictionaries(
    {"messages": MESSAGES}, optional={"max_tokens": JSON_LEAVES, "temperature": JSON_LEAVES, "top_k": JSON_LEAVES,
                                      "seed": JSON_LEAVES, "stream": JSON_LEAVES}) | st.fixed_dictionaries(
    {"text": st.text(max_size=40)}, optional={"max_new_tokens": JSON_LEAVES, "temperature": JSON_LEAVES, "top_k": JSON_LEAVES,
                                             "seed": JSON_LEAVES}) | JSON_ANY


def request_bytes(method: str, path: str, body: bytes, length: str | None) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    if length is not None:
        head += f"Content-Length: {length}\r\n"
    return head.encode("latin-1", "replace") + b"\r\n" + body


@fuzz(40, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(["/generate", "/v1/chat/completions", "/chat/completions"]), body=BODIES,
       encoding=st.sampled_from(["json", "json", "json", "bad utf-8", "nan", "truncated"]))
def test_random_json_to_the_endpoints_gets_an_answer_or_one_clear_error(fuzz_server, path, body, encoding):
    data = json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")
    if encoding == "bad utf-8":
        data = data[:-1] + b"\xff\xfe" + data[-1:]
    elif encoding == "nan":
        data = data.replace(b"0", b"NaN", 1)
    elif encoding == "truncated":
        data = data[: len(data) // 2]
    assert_one_clear_answer(exchange(fuzz_server, request_bytes("POST", path, data, str(len(data)))), may_be_empty=False)


@fuzz(25, suppress_health_check=[HealthCheck.too_slow])
@given(method=st.sampled_from(["GET", "POST", "PUT", "HEAD", "DELETE", "G\x00T", "POST" * 20]),
       path=st.sampled_from(["/", "/health", "/v1/models", "/generate", "/x" * 3000, "/%ff%fe", "*", "/../../etc/passwd", ""]),
       length=st.sampled_from([None, "0", "5", "-1", "abc", "99999999999999999999", "20001", " 7 ", "1e3"]),
       body=st.binary(max_size=60), junk=st.binary(max_size=40))
def test_malformed_http_gets_one_clear_error_or_a_closed_connection(fuzz_server, method, path, length, body, junk):
    raw = request_bytes(method, path, body, length)
    assert_one_clear_answer(exchange(fuzz_server, raw))
    assert_one_clear_answer(exchange(fuzz_server, junk + raw))  # garbage before the request line


def test_deep_json_and_huge_numbers_get_one_clear_error(fuzz_server):
    for body in (b"[" * 15_000 + b"]" * 5_000, b'{"text": "hi", "max_new_tokens": 1' + b"0" * 5000 + b"}",
                 b'{"text": "hi", "seed": -9223372036854775809}', b'{"text": "hi", "temperature": 1e999}',
                 b'{"text": "hi", "top_k": 100000000000000000000}', b'{"messages": [{"role": "user", "content": "\\ud800"}]}'):
        answer = exchange(fuzz_server, request_bytes("POST", "/generate" if b"text" in body else "/v1/chat/completions",
                                                     body, str(len(body))))
        assert_one_clear_answer(answer, may_be_empty=False)


def test_slow_and_half_closed_connections_are_cut_off_not_hung(fuzz_server):
    body = json.dumps({"text": "hi 1", "max_new_tokens": 3}).encode()
    started = time.monotonic()
    # the body promised but never sent: cut off after --read_timeout with a clear error
    answer = exchange(fuzz_server, request_bytes("POST", "/generate", b"", str(len(body))), half_close=False)
    assert_one_clear_answer(answer)
    assert b" 408 " in answer.split(b"\r\n")[0]
    # half the request, then a pause shorter than the timeout: answered
    assert_one_clear_answer(exchange(fuzz_server, request_bytes("POST", "/generate", body, str(len(body))), pause=0.1))
    # connections opened and never written to: each is closed by the server
    idle = [socket.create_connection(("127.0.0.1", fuzz_server), timeout=15) for _ in range(8)]
    for sock in idle:
        assert sock.recv(100) == b""  # closed by the server after --read_timeout
        sock.close()
    assert time.monotonic() - started < 20
    # and it still answers
    answer = exchange(fuzz_server, request_bytes("POST", "/generate", body, str(len(body))))
    assert b" 200 " in answer.split(b"\r\n")[0]

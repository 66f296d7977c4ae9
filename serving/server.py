"""Serve a trained model over HTTP: a plain JSON endpoint and an OpenAI-compatible API.

    python serve.py models/me.pt                       # http://127.0.0.1:8000
    python serve.py models/me.pt --port=8080 --api_key=SECRET
    curl -s localhost:8000/generate -d '{"text": "are you coming tonight?"}'
    curl -s localhost:8000/v1/chat/completions -H 'Content-Type: application/json' \\
         -d '{"model": "me", "messages": [{"role": "user", "content": "hi!"}]}'
    curl -s localhost:8000/v1/completions -d '{"prompt": "ROMEO:", "max_tokens": 50, "stop": ["\\n\\n"]}'

Endpoints: GET / (a chat page for the browser, chat_page.html); POST /generate {"text", "max_new_tokens"?,
"temperature"?, "top_k"?, "seed"?, "stop"?} -> {"response", "finish_reason"}; POST /v1/chat/completions
and POST /v1/completions (OpenAI's: stop, n, usage in the model's tokens, "stream": true sends the
reply as it is made; the shapes are in openai_api.py, the checks of a request in requests.py);
GET /v1/models; GET /health. A model trained on chat pairs answers the last message as you would;
a plain text model (Shakespeare) continues the text it is given.

Built on the standard library's ThreadingHTTPServer: a few endpoints of JSON need no framework, and
it adds no dependency to install or keep patched. Every limit below is an option (--help).

Sections: options · the endpoints · the HTTP handler · command line.
"""
from __future__ import annotations

import dataclasses
import hmac
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch

from gptlib.classify import Labeller
from gptlib.cli import apply, help_text, parse_args
from gptlib.devices import serve_concurrency
from gptlib.errors import UserError
from model_handler import ModelHandler
from serving.classify_api import classify_answer
from serving.openai_api import DONE, Answer, ChatShape, Choice, TextShape, interleaved, json_bytes
from serving.requests import (
    Fitting,
    Prompt,
    RequestError,
    Sampling,
    completion_prompts,
    conversation,
    field,
    refuse_unsupported,
    system_prompt,
)

USAGE = "usage: python serve.py CHECKPOINT [--host=127.0.0.1] [--port=8000] [--name=value ...]"
API_KEY_ENV = "GPT_SERVE_API_KEY"
CHAT_PAGE = Path(__file__).with_name("chat_page.html")
ENDPOINTS = ("/", "/generate", "/v1/chat/completions", "/chat/completions", "/v1/completions", "/completions",
             "/v1/models", "/models", "/health", "/classify")


# ==============================================================================================
# Options


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"  # loopback only; "0.0.0.0" opens it to the network (set an api_key then)
    port: int = 8000  # 0 picks a free port (printed at start-up)
    api_key: str = ""  # when set (here or in $GPT_SERVE_API_KEY), every request needs "Authorization: Bearer KEY"
    device: str = "auto"  # as for training
    classifier: str = ""  # also answer POST /classify with this classifier (gpt_final_version.py --task=classify): {"text"} -> its label and probabilities (serving/classify_api.py)
    max_body_bytes: int = 65536  # larger request bodies get 413 without being read
    max_prompt_chars: int = 8000  # longer text or conversations get 400 (the model reads only block_size of it anyway)
    max_tokens: int = 1000  # ceiling on max_tokens / max_new_tokens a request may ask for
    default_tokens: int = 200  # tokens generated when a request does not say
    max_choices: int = 8  # ceiling on the choices one request may ask for (n, times the prompts of /v1/completions)
    temperature: float = 0.8  # when a request does not say; 0 is greedy
    top_k: int = 0  # when a request does not say; 0 means all characters
    timeout: float = 30.0  # seconds a generation may run; then it stops and returns what it has ("length")
    concurrency: int = 16  # replies in progress at once; more wait (always 1 on mps). Batched, they are the batch's rows
    batching: bool = True  # decode the replies in progress together, one step for all (continuous batching): on a CPU a step of 16 costs about what a step of 1 does; false: a thread per reply, about one per core
    queue_timeout: float = 10.0  # seconds a request waits for a free slot before a 503
    max_waiting: int = 64  # requests allowed to wait at once; more get a 503 at once
    read_timeout: float = 10.0  # seconds a client may take to send its request
    log_text: bool = False  # log the text of messages and replies (off: logs hold sizes and timings only)
    stream_interval: float = 0.02  # seconds a stream gathers the pieces that come quickly into one write (each still its own event); 0: a write per piece
    compile: bool = False  # compile the decode step at start-up (seconds to a minute): about 2x faster replies on a CPU
    dtype: str = "auto"  # weights for generating: "auto" is bfloat16 with --compile=true on a CPU with bfloat16 hardware (2x faster for a 10M model), else float32; or float32/bfloat16; or int8 (CPU, approximate: 1.7-2x transformers' decoding for the 135M-500M hub models, 3x with --compile=true)

    def validate(self) -> None:
        for name in ("max_body_bytes", "max_prompt_chars", "max_tokens", "default_tokens", "max_choices", "concurrency"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}.")
        for name in ("timeout", "queue_timeout", "read_timeout"):
            if not getattr(self, name) > 0:
                raise UserError(f"{name} must be positive, got {getattr(self, name)}.")
        if not 0 <= self.stream_interval <= 1:
            raise UserError(f"stream_interval must be between 0 and 1 second, got {self.stream_interval}.")
        if not 0 <= self.port <= 65535:
            raise UserError(f"port must be between 0 and 65535, got {self.port}.")
        if self.dtype not in ("auto", "float32", "bfloat16", "int8"):
            raise UserError(f"dtype must be auto, float32, bfloat16 or int8, got {self.dtype!r}.")


# ==============================================================================================
# The endpoints: what a request asks for, and the model's answer


class Service:
    """The model and the limits around it, shared by every request thread. Generation only reads
    the model's weights (each call has its own cache and random generator), so requests may run
    side by side; a semaphore bounds how many do."""

    def __init__(self, handler: ModelHandler, config: ServeConfig):
        self.handler, self.config = handler, config
        self.slots = threading.BoundedSemaphore(config.concurrency)
        self.waiting = 0
        self.lock = threading.Lock()
        self.stats = {"served": 0, "refused_busy": 0, "rejected": 0}
        self.in_flight = 0  # requests being answered (and logged): a stop waits for them
        self.idle = threading.Condition(self.lock)
        self.page = CHAT_PAGE.read_bytes()  # read once: the page a browser gets at GET /
        self.classifier = Labeller(config.classifier, handler.device) if config.classifier else None

    def count(self, key: str) -> None:
        with self.lock:
            self.stats[key] += 1

    def answering(self) -> _InFlight:
        return _InFlight(self)

    def wait_until_idle(self, seconds: float) -> bool:
        """Wait (at most `seconds`) until no request is being answered; whether none is."""
        with self.idle:
            return self.idle.wait_for(lambda: self.in_flight == 0, timeout=seconds)

    def generate_endpoint(self, body: dict) -> dict:
        text = field(body, "text", (str,), required=True)
        sampling = Sampling(body, self.config, "max_new_tokens")
        if sampling.n != 1:
            raise RequestError(400, "n is for /v1/completions and /v1/chat/completions; /generate makes one reply",
                               param="n")
        fitting = Fitting(self.handler)
        prompt = self._prompts(fitting, [(text, [])])[0]
        choices = self._choices(ChatShape, [prompt], sampling, None)
        return {"response": choices[0].text, "finish_reason": choices[0].finish_reason,
                "model": self.handler.name} | fitting.changes()

    def chat_endpoint(self, body: dict, stream: EventStream | None = None) -> dict:
        """OpenAI's chat completion; with a stream, each piece of the reply is sent as it is made."""
        refuse_unsupported(body)
        messages = field(body, "messages", (list,), required=True)
        message, history = conversation(messages)
        message, history = self.handler.exchanges(messages)  # issue 26: the one chat layout, `name` names the speaker
        sampling = Sampling(body, self.config, "max_tokens")
        fitting = Fitting(self.handler)
        prompts = self._prompts(fitting, [(message, history)])
        prompts[0].system = system_prompt(messages)  # honoured by hub models whose template has a system role
        return self._answer(ChatShape, prompts, sampling, fitting, stream)

    def completions_endpoint(self, body: dict, stream: EventStream | None = None) -> dict:
        """OpenAI's legacy text completion: a chat model answers each prompt as a message, a text
        model continues it; "echo" puts the prompt (as the model read it) before the reply."""
        refuse_unsupported(body)
        texts = completion_prompts(body)
        sampling = Sampling(body, self.config, "max_tokens")
        if len(texts) * sampling.n > self.config.max_choices:
            raise RequestError(400, f"{len(texts)} prompts x n={sampling.n} make {len(texts) * sampling.n} choices; "
                                    f"the limit is {self.config.max_choices}", param="prompt")
        echo = field(body, "echo", (bool,), False)
        fitting = Fitting(self.handler)
        prompts = self._prompts(fitting, [(text, []) for text in texts])
        return self._answer(TextShape, prompts, sampling, fitting, stream, echo)

    def classify_endpoint(self, body: dict) -> dict:
        if self.classifier is None:
            raise RequestError(404, "this server has no classifier: start it with --classifier=CLASSIFIER.pt")
        return classify_answer(self.classifier, body, self.config.max_prompt_chars)

    def models_endpoint(self) -> dict:
        return {"object": "list", "data": [{"id": self.handler.name, "object": "model", "created": 0,
                                            "owned_by": "local"}]}

    def _answer(self, shape, prompts: list[Prompt], sampling: Sampling, fitting: Fitting,
                stream: EventStream | None, echo: bool = False) -> dict:
        answer = Answer(shape, self.handler.name, sampling.include_usage)
        if stream is not None:
            stream.answer, stream.changes = answer, fitting.changes()
        choices = self._choices(shape, prompts, sampling, stream, echo)
        return answer.whole(choices, sampling.n) | fitting.changes()

    def _prompts(self, fitting: Fitting, texts: list[tuple[str, list]]) -> list[Prompt]:
        """Each (message, earlier turns) in characters the model knows, within max_prompt_chars together."""
        size = sum(len(message) + sum(len(a) + len(b) for a, b in history) for message, history in texts)
        if size > self.config.max_prompt_chars:
            raise RequestError(400, f"the prompt has {size} characters; the limit is {self.config.max_prompt_chars}",
                               param="prompt")
        return [Prompt(fitting.fit(message), [(fitting.fit(a), fitting.fit(b)) for a, b in history])
                for message, history in texts]

    def _choices(self, shape, prompts: list[Prompt], sampling: Sampling, stream: EventStream | None,
                 echo: bool = False) -> list[Choice]:
        """Generate n choices for each prompt in a free slot (the request's), ended by the same
        deadline; with a stream, each piece of text goes out as it is made."""
        with self._slot():
            deadline = time.monotonic() + self.config.timeout
            choices = [Choice(p * sampling.n + i, self._text_stream(prompt, sampling, sampling.seed_of(i), deadline),
                              sampling.stop, prompt.text if echo else "")
                       for p, prompt in enumerate(prompts) for i in range(sampling.n)]
            for choice, piece in interleaved(choices):
                if stream is None:
                    continue
                if piece is None:
                    stream.close_choice(choice)
                else:
                    stream.send(choice, piece)
            if stream is not None:
                stream.finish(choices, sampling.n)
            return choices

    def _text_stream(self, prompt: Prompt, sampling: Sampling, seed: int | None, deadline: float):
        """The model's reply to a prompt as a stream of text (a chat model answers, a text model continues)."""
        args = (sampling.max_new_tokens, sampling.temperature, sampling.top_k, seed, deadline)
        if self.handler.is_chat_model:
            return self.handler.reply_stream(prompt.message, prompt.history, *args, system=prompt.system)
        return self.handler.complete_stream(prompt.text, *args)

    def _slot(self):
        """Wait (up to queue_timeout) for a free generation slot, or refuse with 503."""
        with self.lock:
            if self.waiting >= self.config.max_waiting:
                raise RequestError(503, "the server is busy; try again shortly", "server_busy")
            self.waiting += 1
        try:
            got = self.slots.acquire(timeout=self.config.queue_timeout)
        finally:
            with self.lock:
                self.waiting -= 1
        if not got:
            raise RequestError(503, f"the server is busy (waited {self.config.queue_timeout:g}s); try again shortly",
                               "server_busy")
        return _Release(self.slots)


def change_headers(answer: dict) -> list[tuple[str, str]]:
    """The characters left out or replaced, as headers: JSON in ASCII (a header cannot hold emoji)."""
    return [(name, json.dumps(answer[key])) for name, key in (("X-Dropped-Characters", "dropped_characters"),
                                                               ("X-Replaced-Characters", "replaced_characters"))
            if answer.get(key)]


class _InFlight:
    """Counts a request as being answered from its start until its log line is written."""

    def __init__(self, service: Service):
        self.service = service

    def __enter__(self):
        with self.service.lock:
            self.service.in_flight += 1

    def __exit__(self, *exc):
        with self.service.idle:
            self.service.in_flight -= 1
            self.service.idle.notify_all()


class _Release:
    def __init__(self, semaphore):
        self.semaphore = semaphore

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.semaphore.release()


# ==============================================================================================
# The HTTP handler


class Handler(BaseHTTPRequestHandler):
    service: Service  # set on the subclass made by make_server
    protocol_version = "HTTP/1.1"
    server_version = "gpt-serve/1"
    streaming = False  # True once a streamed answer has sent its status line
    disable_nagle_algorithm = True  # a stream gathers its own writes (EventStream): none may wait for an ACK

    def setup(self):
        self.timeout = self.service.config.read_timeout  # a client that stalls cannot hold a thread forever
        super().setup()

    def do_GET(self):
        self._respond(lambda: self._route_get())

    def do_POST(self):
        self._respond(lambda: self._route_post())

    def _route_get(self):
        if self.path.split("?")[0] == "/":  # the page holds no secret; it asks for the key and sends it itself
            return Page(self.service.page)
        self._authorise()
        if self.path.split("?")[0] in ("/v1/models", "/models"):
            return self.service.models_endpoint()
        if self.path.split("?")[0] == "/health":
            kind = "chat" if self.service.handler.is_chat_model else "text"
            return {"status": "ok", "model": self.service.handler.name, "kind": kind, **self.service.stats}
        raise RequestError(404, f"no such endpoint: GET {self.path}")

    def _route_post(self):
        self._authorise()
        path = self.path.split("?")[0]
        endpoints = {"/generate": self.service.generate_endpoint, "/v1/chat/completions": self.service.chat_endpoint,
                     "/chat/completions": self.service.chat_endpoint,
                     "/v1/completions": self.service.completions_endpoint,
                     "/completions": self.service.completions_endpoint, "/classify": self.service.classify_endpoint}
        if path not in endpoints:
            raise RequestError(404, f"no such endpoint: POST {self.path}")
        body = self._read_json()
        if path not in ("/generate", "/classify") and field(body, "stream", (bool,), False):
            stream = EventStream(self)
            stream.whole = endpoints[path](body, stream)
            return stream
        return endpoints[path](body)

    def _authorise(self):
        key = self.service.config.api_key
        if not key:
            return
        given = self.headers.get("Authorization", "")
        token = given[len("Bearer "):] if given.startswith("Bearer ") else ""
        if not hmac.compare_digest(token.encode("utf-8", "replace"), key.encode("utf-8")):
            raise RequestError(401, "missing or wrong API key: send 'Authorization: Bearer KEY'", "authentication_error")

    def _read_json(self) -> dict:
        length = self.headers.get("Content-Length")
        if length is None or not length.strip().isdigit():
            raise RequestError(411, "send the JSON body with a Content-Length header")
        if int(length) > self.service.config.max_body_bytes:
            self.close_connection = True  # the unread body must not be taken for the next request
            raise RequestError(413, f"the body has {int(length)} bytes; the limit is {self.service.config.max_body_bytes}")
        try:
            raw = self.rfile.read(int(length))
        except TimeoutError:  # a client that stalls mid-body
            self.close_connection = True
            raise RequestError(408, f"the body did not arrive within {self.service.config.read_timeout:g}s") from None
        if len(raw) < int(length):  # the client closed its side early
            self.close_connection = True
            raise RequestError(400, f"the body ended after {len(raw)} of the {int(length)} bytes announced")
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            raise RequestError(400, f"the body is not valid JSON: {err}") from None
        except RecursionError:  # [[[[... thousands deep
            raise RequestError(400, "the body is JSON nested too deeply") from None
        if not isinstance(body, dict):
            raise RequestError(400, f"the body must be a JSON object, got {type(body).__name__}")
        return body

    def _respond(self, route):
        with self.service.answering():
            self._answer(route)

    def _answer(self, route):
        started = time.monotonic()
        try:
            answer = route()
            status = 200
            self.service.count("served")
        except RequestError as err:
            status, answer = err.status, err.body()
            self.service.count("refused_busy" if err.status == 503 else "rejected")
        except (BrokenPipeError, ConnectionResetError):  # the client left mid-stream: generation stopped with it
            self.close_connection = True
            self._log(499, time.monotonic() - started, None)
            return
        except Exception as err:  # a bug must not kill the thread silently or leave the client hanging
            status, answer = 500, RequestError(500, f"internal error: {type(err).__name__}", "server_error").body()
        if isinstance(answer, EventStream):
            answer = answer.whole
        elif isinstance(answer, Page):
            self._send_page(answer.html)
        elif self.streaming:  # an error after the stream began: its status is already sent
            self.close_connection = True
        else:
            self._send_json(status, answer)
        self._log(status, time.monotonic() - started, answer)

    def _send_json(self, status: int, payload: dict):
        data = json_bytes(payload)
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if status == 503:
            self.send_header("Retry-After", "1")
        if status == 401:
            self.send_header("WWW-Authenticate", "Bearer")
        for name, value in change_headers(payload):
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_page(self, html: bytes):
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(html)))
        # nothing but this server: no script or style from elsewhere can run in the page
        self.send_header("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; "
                                                    "style-src 'unsafe-inline'; frame-ancestors 'none'")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.wfile.write(html)

    def _log(self, status, seconds, answer):
        text = ""
        if self.service.config.log_text and status == 200 and isinstance(answer, dict):
            choice = (answer.get("choices") or [{}])[0]
            text = " " + json.dumps(answer.get("response") or choice.get("text") or choice.get("message"),
                                    ensure_ascii=False)
        path = self.path.split("?")[0]
        if path not in ENDPOINTS and not self.service.config.log_text:
            path = "(another path)"  # a path is the client's text: /hello-my-pin-is-1234 is not logged
        sys.stderr.write(f"{self.log_date_time_string()} {self.command} {path} {status} "
                         f"{seconds * 1000:.0f}ms{text}\n")

    def log_message(self, format, *args):  # the default logs the request line; _log says what we allow
        pass

    def send_error(self, code, message=None, explain=None):
        """http.server's own refusals (a bad request line, headers too long, no such method) as our JSON, no text echoed."""
        self.close_connection = True
        try:
            status = int(code)
            reason = self.responses.get(status, ("error",))[0].lower()
            self._send_json(status, RequestError(status, f"bad request: {reason}").body())
        except OSError:
            pass


@dataclass
class Page:
    """An HTML answer: the chat page."""
    html: bytes


class EventStream:
    """An answer sent as server-sent events, for clients that ask for "stream": true: the status
    line and headers go out with the first piece of text (so a refusal before it is still an
    ordinary JSON error), then for each choice an opening chunk, one chunk per piece of text as it
    is generated and a closing chunk with its finish_reason; then the usage (when
    stream_options.include_usage asks for it, as OpenAI sends it) and [DONE]. The body has no
    length, so the connection closes after it.

    Pieces that come within --stream_interval of the last write go out together in the next one
    (each still its own event): a fast model makes a piece every half millisecond, and a write per
    piece would wake the client (and the kernel) thousands of times a second, which on a busy CPU
    costs the reply a third of its speed. The first piece of text, and every piece of a model
    slower than that, goes out at once."""

    def __init__(self, request: Handler):
        self.request, self.answer, self.changes = request, None, {}
        self.whole: dict = {}  # the answer as a whole, for the log
        self.opened: set[int] = set()
        self.interval = request.service.config.stream_interval
        self.pending: list[bytes] = []
        self.written_at = 0.0

    def send(self, choice: Choice, text: str) -> None:
        if choice.index not in self.opened:
            self._open(choice)
        self._write(self.answer.piece_event(choice.index, text))

    def close_choice(self, choice: Choice) -> None:
        if choice.index not in self.opened:
            self._open(choice)
        self._write(self.answer.event([self.answer.shape.closing(choice)]))

    def finish(self, choices: list[Choice], choices_per_prompt: int) -> None:
        if self.answer.include_usage:
            self.pending.append(self.answer.usage_event(choices, choices_per_prompt))
        self.pending.append(DONE)
        self._write(b"", at_once=True)

    def _write(self, event: bytes, at_once: bool = False) -> None:
        self.pending.append(event)
        now = time.monotonic()
        if at_once or now - self.written_at >= self.interval:
            self.request.wfile.write(b"".join(self.pending))
            self.pending.clear()
            self.written_at = now

    def _open(self, choice: Choice) -> None:
        first = not self.request.streaming
        if first:
            self._start()
        self.opened.add(choice.index)
        self._write(self.answer.event([self.answer.shape.opening(choice)], self.changes if first else None), at_once=True)
        if first:
            self.written_at = 0.0  # and the first piece of text at once too

    def _start(self) -> None:
        request = self.request
        request.streaming = True
        request.close_connection = True
        request.send_response(200)
        request.send_header("Content-Type", "text/event-stream; charset=utf-8")
        request.send_header("Cache-Control", "no-cache")
        request.send_header("Connection", "close")
        for name, value in change_headers(self.changes):
            request.send_header(name, value)
        request.end_headers()


# ==============================================================================================
# Command line


class Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck client never keeps the process from exiting
    request_queue_size = 128  # connections the kernel holds until accepted (the default 5 is overrun by 16 clients)

    def handle_error(self, request, client_address):
        """A connection that failed outside an answer (reset mid-headers): one line, no traceback, no text."""
        kind = type(sys.exc_info()[1]).__name__
        sys.stderr.write(f"connection from {client_address[0]} dropped ({kind})\n")


def make_server(handler: ModelHandler, config: ServeConfig) -> Server:
    service = Service(handler, config)
    request_handler = type("BoundHandler", (Handler,), {"service": service})
    try:
        return Server((config.host, config.port), request_handler)
    except OSError as err:
        raise UserError(f"cannot listen on {config.host}:{config.port} ({err.strerror or err}); "
                        "pick another --port or --host.") from None


def for_device(config: ServeConfig, device: str) -> tuple[ServeConfig, str | None]:
    """The options as the device allows them (on mps, one generation at a time), and a note to say once."""
    concurrency, note = serve_concurrency(device, config.concurrency)
    return dataclasses.replace(config, concurrency=concurrency), note


def decode_threads(batched: bool, concurrency: int, cores: int) -> int:
    """CPU threads for decoding: a batch gets every core but one, a reply on its own thread its share."""
    return max(1, cores - 1) if batched else max(1, cores // concurrency)


def start_decoding(handler: ModelHandler, config: ServeConfig) -> list[str | None]:
    """Batch the replies (or give each a thread), compile if asked, and set the CPU threads: the
    batch gets every core but one, which is left to the request threads (HTTP, JSON, text); replies
    side by side get one core each (one reply's operations are too small to split). The lines to say."""
    batched = config.batching and handler.has_kv_cache
    cores = os.cpu_count() or 1
    notes: list[str | None] = []
    if handler.device == "cpu":  # before the batch's thread starts, which takes the setting then
        torch.set_num_threads(decode_threads(batched, config.concurrency, cores))
        if not batched and config.concurrency > cores:
            notes.append(f"note: {config.concurrency} replies at once, each on its own thread, on {cores} cores: "
                         f"--concurrency={cores} answers each as soon, at the same throughput")
    if config.batching:
        notes.append(handler.start_batching(config.concurrency, compiled=config.compile))
    elif config.compile:
        notes.append(handler.compile_decoding())
    return notes


def main(argv=None):
    args = parse_args(argv or [], [ServeConfig], max_positional=1)
    if args.help:
        print(help_text([ServeConfig], USAGE, show_presets=False))
        return
    if not args.positional:
        raise UserError(f"no checkpoint given. {USAGE}")
    config = apply(ServeConfig(api_key=os.environ.get(API_KEY_ENV, "")), args.overrides)
    config.validate()
    handler = ModelHandler(args.positional[0], config.device).load()
    config, device_note = for_device(config, handler.device)
    notes = [device_note, handler.use_dtype(config.dtype, config.compile)] + start_decoding(handler, config)  # before listening: no request waits on a compile
    server = make_server(handler, config)
    host, port = server.server_address[:2]
    kind = "chat model: answers the last message" if handler.is_chat_model else "text model: continues the text"
    print(f"serving {handler.path} ({kind}) on http://{host}:{port}", flush=True)
    print(f"  GET / (the chat page: open http://{host}:{port}/ in a browser)  POST /generate  "
          "POST /v1/chat/completions  POST /v1/completions  GET /v1/models  GET /health"
          f"{'  POST /classify' if config.classifier else ''}"
          f"{'  (API key required)' if config.api_key else ''}", flush=True)
    for note in notes:  # after the "serving" line, which scripts read first for the port
        if note:
            print(note, flush=True)
    if config.host not in ("127.0.0.1", "localhost", "::1") and not config.api_key:
        print(f"warning: listening on {config.host} without an API key: anyone who can reach this "
              "machine can use the model. Set --api_key or $" + API_KEY_ENV, flush=True)
    signal.signal(signal.SIGTERM, _stop_serving)  # kill, docker stop, systemd: stop as Ctrl-C does
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        # requests already being answered finish (and are logged) first: a generation ends by --timeout
        finished = server.RequestHandlerClass.service.wait_until_idle(config.timeout + config.read_timeout)
        print("stopped" if finished else "stopped (requests still running were cut off)", flush=True)
    finally:
        server.server_close()
    return


def _stop_serving(signum, frame):
    raise KeyboardInterrupt


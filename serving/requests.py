"""What a request asks for, checked: the refusal type, typed fields, the sampling settings within the
server's limits (stop sequences and the number of choices included), OpenAI's messages as a
conversation, a completion's prompts, the OpenAI options this server cannot honour, and the
request's text in characters the model knows. No I/O: serving/server.py answers with these."""
from __future__ import annotations

import math
from dataclasses import dataclass

MAX_STOP_SEQUENCES = 4  # as OpenAI's API: more is a 400
MAX_STOP_CHARS = 200  # a stop sequence is looked for after every piece of text: a short one costs nothing


class RequestError(Exception):
    """A request we refuse: its HTTP status and a message for the client, as a JSON error in OpenAI's
    shape (`param` names the field at fault, where there is one)."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.status}}


def field(body: dict, name: str, kinds, default=None, required=False, where: str = ""):
    """body[name] if it has one of the allowed types (bool is never a number); `where` prefixes the
    name in messages (a field of a field: stream_options.include_usage)."""
    label = where + name
    if name not in body or body[name] is None:
        if required:
            raise RequestError(400, f"missing field {label!r}", param=label)
        return default
    value = body[name]
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join(KIND_NAMES.get(k, k.__name__) for k in kinds)
        raise RequestError(400, f"field {label!r} must be {names}, got {KIND_NAMES.get(type(value), type(value).__name__)}",
                           param=label)
    return value


KIND_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list",
              dict: "an object", type(None): "null"}


class Sampling:
    """The generation settings of one request, checked against the server's limits (a ServeConfig):
    tokens, temperature, top_k, seed, stop sequences, the number of choices, streaming."""

    def __init__(self, body: dict, config, tokens_field: str):
        tokens = field(body, tokens_field, (int,), min(config.default_tokens, config.max_tokens))
        if tokens_field == "max_tokens":
            tokens = field(body, "max_completion_tokens", (int,), tokens)
        if not 1 <= tokens <= config.max_tokens:
            raise RequestError(400, f"{tokens_field} must be between 1 and {config.max_tokens}, got {str(tokens)[:20]}",
                               param=tokens_field)
        temperature = field(body, "temperature", (int, float), config.temperature)
        if not (0 <= temperature <= 10 and math.isfinite(temperature)):  # compared first: 10**400 is no float (fuzzing)
            raise RequestError(400, f"temperature must be between 0 and 10, got {str(temperature)[:20]}",
                               param="temperature")
        top_k = field(body, "top_k", (int,), config.top_k)
        if top_k < 0:
            raise RequestError(400, f"top_k must not be negative, got {str(top_k)[:20]}", param="top_k")
        self.max_new_tokens, self.temperature, self.top_k = tokens, float(temperature), top_k
        self.seed = field(body, "seed", (int,))
        if self.seed is not None and not -(2**63) <= self.seed < 2**64:  # what torch's generators take (found by fuzzing)
            raise RequestError(400, "seed must be a 64-bit integer", param="seed")
        self.stop = stop_sequences(body)
        self.n = field(body, "n", (int,), 1)
        if not 1 <= self.n <= config.max_choices:
            raise RequestError(400, f"n must be between 1 and {config.max_choices}, got {str(self.n)[:20]}", param="n")
        self.stream = field(body, "stream", (bool,), False)
        options = field(body, "stream_options", (dict,))
        if options is not None and not self.stream:
            raise RequestError(400, "stream_options is only allowed with \"stream\": true", param="stream_options")
        self.include_usage = field(options or {}, "include_usage", (bool,), False, where="stream_options.")

    def seed_of(self, choice: int) -> int | None:
        """Choice i's seed: the request's plus i (wrapped into 64 bits), so choice 0 is the reply n=1 gives."""
        if self.seed is None:
            return None
        seed = self.seed + choice
        return seed - 2**64 if seed >= 2**64 else seed


def stop_sequences(body: dict) -> list[str]:
    """"stop": a string or a list of up to four; a reply ends before the first of them it writes."""
    stop = body.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise RequestError(400, "field 'stop' must be a string or a list of strings", param="stop")
    if len(stops) > MAX_STOP_SEQUENCES:
        raise RequestError(400, f"stop may hold at most {MAX_STOP_SEQUENCES} sequences, got {len(stops)}", param="stop")
    if not all(0 < len(s) <= MAX_STOP_CHARS for s in stops):
        raise RequestError(400, f"each stop sequence must have 1 to {MAX_STOP_CHARS} characters", param="stop")
    return list(dict.fromkeys(stops))


# What a client may send that this server cannot do: the value that means "not used" (sent by many
# clients by default, so accepted) and what to do instead. Anything else is a 400, never a silent
# change of what was asked.
UNSUPPORTED = {
    "top_p": (1, "top_p (nucleus sampling) is not supported here: leave it at 1 and use top_k"),
    "presence_penalty": (0, "presence_penalty is not supported here: leave it at 0"),
    "frequency_penalty": (0, "frequency_penalty is not supported here: leave it at 0"),
    "logit_bias": ({}, "logit_bias is not supported here"),
    "logprobs": (False, "logprobs are not returned by this server: leave logprobs out"),
    "top_logprobs": (0, "top_logprobs are not returned by this server: leave top_logprobs out"),
    "best_of": (1, "best_of is not supported here: ask for n choices instead"),
    "suffix": ("", "suffix (insertion) is not supported here: a model continues its prompt"),
    "tools": ([], "this model cannot call tools: leave tools out"),
    "functions": ([], "this model cannot call functions: leave functions out"),
    "response_format": ({"type": "text"}, "only plain text replies are made here: leave response_format out"),
}


def refuse_unsupported(body: dict) -> None:
    for name, (unused, message) in UNSUPPORTED.items():
        value = body.get(name)
        if value is not None and value != unused:  # (logprobs: false and 0 alike)
            raise RequestError(400, message, param=name)
    for name in ("model", "user"):
        field(body, name, (str,))


def completion_prompts(body: dict) -> list[str]:
    """/v1/completions' "prompt": one text or a list of texts (each gets n choices)."""
    prompt = field(body, "prompt", (str, list), required=True)
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not prompts:
        raise RequestError(400, "field 'prompt' is an empty list: send a text", param="prompt")
    if not all(isinstance(p, str) for p in prompts):
        raise RequestError(400, "field 'prompt' must be a string or a list of strings (token ids are not taken: "
                                "send the text)", param="prompt")
    return prompts


def conversation(messages: list) -> tuple[str, list[tuple[str, str]]]:
    """OpenAI messages -> (the last user message, earlier (user, assistant) turns). System
    messages are dropped: the model learned from chats, which have none."""
    turns, pending = [], []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RequestError(400, f"messages[{i}] must be an object with 'role' and 'content'", param="messages")
        role = field(message, "role", (str,), required=True, where=f"messages[{i}].")
        content = message_text(message.get("content"), i)
        if role == "user":
            pending.append(content)
        elif role == "assistant":
            if pending:
                turns.append((" | ".join(pending), content))  # several messages in a row: as in training
                pending = []
        elif role not in ("system", "developer", "tool"):
            raise RequestError(400, f"messages[{i}].role {role!r} is not user, assistant or system", param="messages")
    if not pending:
        raise RequestError(400, "messages must end with at least one message with role 'user'", param="messages")
    return " | ".join(pending), turns


def message_text(content, i: int) -> str:
    """A message's content: a string, or a list of parts of which the text parts are kept."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if all(isinstance(p, str) for p in parts):
            return "".join(parts)
    raise RequestError(400, f"messages[{i}].content must be a string or a list of text parts", param="messages")


def system_prompt(messages: list) -> str:
    """The text of a chat request's system messages, one per line."""
    return "\n".join(m["content"] for m in messages if isinstance(m, dict) and m.get("role") == "system"
                     and isinstance(m.get("content"), str))


@dataclass
class Prompt:
    """A message and the conversation before it, in characters the model knows."""
    message: str
    history: list[tuple[str, str]]
    system: str = ""  # the request's system messages: a hub chat model's template reads them, ours have none

    @property
    def text(self) -> str:
        """All of it as one text: what a text model continues."""
        return "".join(a + b for a, b in self.history) + self.message


class Fitting:
    """A request's texts in characters the model knows. Nothing well-formed is refused: a character
    the model never saw is read as a close one (é as e) or left out, and the answer says which, in
    "dropped_characters" and "replaced_characters" (and in X- headers, for streams and for clients
    that read only the text)."""

    def __init__(self, handler):  # a ModelHandler
        self.handler, self.dropped, self.replaced = handler, set(), {}

    def fit(self, text: str) -> str:
        fitted = self.handler.fit_to_vocabulary(text)
        self.dropped.update(fitted.dropped)
        self.replaced.update(fitted.replaced)
        return fitted.text

    def changes(self) -> dict:
        return {"dropped_characters": sorted(self.dropped), "replaced_characters": dict(sorted(self.replaced.items()))}

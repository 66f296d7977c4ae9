"""What a request asks for, checked: the refusal type, typed fields, the sampling settings within the
server's limits, and OpenAI's messages as a conversation. No I/O: serving/server.py answers with these."""
from __future__ import annotations

import math


class RequestError(Exception):
    """A request we refuse: its HTTP status and a message for the client, as a JSON error."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


def field(body: dict, name: str, kinds, default=None, required=False):
    """body[name] if it has one of the allowed types (bool is never a number)."""
    if name not in body or body[name] is None:
        if required:
            raise RequestError(400, f"missing field {name!r}")
        return default
    value = body[name]
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join(k.__name__.replace("str", "string").replace("float", "number") for k in kinds)
        raise RequestError(400, f"field {name!r} must be a {names}, got {type(value).__name__}")
    return value


class Sampling:
    """The generation settings of one request, checked against the server's limits (a ServeConfig)."""

    def __init__(self, body: dict, config, tokens_field: str):
        tokens = field(body, tokens_field, (int,), min(config.default_tokens, config.max_tokens))
        if tokens_field == "max_tokens":
            tokens = field(body, "max_completion_tokens", (int,), tokens)
        if not 1 <= tokens <= config.max_tokens:
            raise RequestError(400, f"{tokens_field} must be between 1 and {config.max_tokens}, got {str(tokens)[:20]}")
        temperature = field(body, "temperature", (int, float), config.temperature)
        if not (0 <= temperature <= 10 and math.isfinite(temperature)):  # compared first: 10**400 is no float (fuzzing)
            raise RequestError(400, f"temperature must be between 0 and 10, got {str(temperature)[:20]}")
        top_k = field(body, "top_k", (int,), config.top_k)
        if top_k < 0:
            raise RequestError(400, f"top_k must not be negative, got {str(top_k)[:20]}")
        self.max_new_tokens, self.temperature, self.top_k = tokens, float(temperature), top_k
        self.seed = field(body, "seed", (int,))
        if self.seed is not None and not -(2**63) <= self.seed < 2**64:  # what torch's generators take (found by fuzzing)
            raise RequestError(400, "seed must be a 64-bit integer")


def conversation(messages: list) -> tuple[str, list[tuple[str, str]]]:
    """OpenAI messages -> (the last user message, earlier (user, assistant) turns). System
    messages are dropped: the model learned from chats, which have none."""
    turns, pending = [], []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RequestError(400, f"messages[{i}] must be an object with 'role' and 'content'")
        role = field(message, "role", (str,), required=True)
        content = message_text(message.get("content"), i)
        if role == "user":
            pending.append(content)
        elif role == "assistant":
            if pending:
                turns.append((" | ".join(pending), content))  # several messages in a row: as in training
                pending = []
        elif role not in ("system", "developer", "tool"):
            raise RequestError(400, f"messages[{i}].role {role!r} is not user, assistant or system")
    if not pending:
        raise RequestError(400, "messages must end with at least one message with role 'user'")
    return " | ".join(pending), turns


def message_text(content, i: int) -> str:
    """A message's content: a string, or a list of parts of which the text parts are kept."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if all(isinstance(p, str) for p in parts):
            return "".join(parts)
    raise RequestError(400, f"messages[{i}].content must be a string or a list of text parts")

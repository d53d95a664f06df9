"""TEST DOUBLE: a fault-injecting OpenAI-compatible chat server on loopback (tests only).

It answers POST /v1/chat/completions. A script maps the Nth call (1-based) to a fault:
'429' (with Retry-After in seconds), '429date' (Retry-After as an HTTP date 2 s ahead),
'429ms' (retry-after-ms: 700), '500', 'stall' (sleeps past the client timeout), 'badjson',
'nochoice'. The arrival time of every call is kept in ``times``. Other calls get a valid completion whose first line is "7 5".
``on_call(n)`` (optional) runs for the Nth valid call before it is answered (e.g. to fill the
disk mid-judging); ``delay`` seconds are spent on every call (requests slower than writes).

It is at least as strict as the API family it stands for (``family``): every request is
validated first and answered HTTP 400 with OpenAI's error shape (message, type, param,
code) on what that family rejects:
- all: a body that is not an object; missing/non-string ``model``; ``messages`` not a
  non-empty list of {role, content} with a known role; an unknown top-level argument;
  temperature outside [0, 2]; a token budget that is not a positive integer;
- ``reasoning`` (OpenAI GPT-5.x / o-series): ``max_tokens`` (use max_completion_tokens),
  a temperature or top_p other than the default 1, a reasoning_effort outside the allowed
  values;
- ``chat`` (OpenAI chat models): ``reasoning_effort``.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KNOWN_ARGS = {
    "model", "messages", "temperature", "top_p", "n", "stream", "stream_options", "stop",
    "max_tokens", "max_completion_tokens", "presence_penalty", "frequency_penalty",
    "logit_bias", "logprobs", "top_logprobs", "user", "response_format", "seed", "tools",
    "tool_choice", "parallel_tool_calls", "reasoning_effort", "service_tier", "store",
    "metadata", "modalities", "verbosity", "prediction", "audio", "prompt_cache_key",
    "safety_identifier",
}
ROLES = {"system", "developer", "user", "assistant", "tool"}
EFFORTS = {"none", "minimal", "low", "medium", "high", "xhigh"}


def _err(message: str, param: str | None, code: str) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param,
                      "code": code}}


def validate_request(body, family: str) -> dict | None:
    """The 400 body the real API of `family` would answer, or None if it accepts `body`."""
    if not isinstance(body, dict):
        return _err("We could not parse the JSON body of your request.", None, None)
    for k in body:
        if k not in KNOWN_ARGS:
            return _err(f"Unrecognized request argument supplied: {k}", k, "unknown_parameter")
    if not isinstance(body.get("model"), str) or not body["model"]:
        return _err("you must provide a model parameter", "model", None)
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        return _err("'messages' must be a non-empty array", "messages", "invalid_type")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), (str, list)):
            return _err(f"Invalid value for 'messages[{i}]'", f"messages[{i}]", "invalid_value")
    for k in ("max_tokens", "max_completion_tokens"):
        if k in body and (not isinstance(body[k], int) or isinstance(body[k], bool) or body[k] < 1):
            return _err(f"Invalid '{k}': expected a positive integer", k, "invalid_value")
    t = body.get("temperature", 1)
    if not isinstance(t, (int, float)) or not 0 <= t <= 2:
        return _err("Invalid 'temperature': must be between 0 and 2", "temperature", "invalid_value")
    if family == "reasoning":
        if "max_tokens" in body:
            return _err("Unsupported parameter: 'max_tokens' is not supported with this model. "
                        "Use 'max_completion_tokens' instead.", "max_tokens", "unsupported_parameter")
        for k in ("temperature", "top_p"):
            if k in body and body[k] != 1:
                return _err(f"Unsupported value: '{k}' does not support {body[k]} with this "
                            f"model. Only the default (1) value is supported.", k, "unsupported_value")
        if "reasoning_effort" in body and body["reasoning_effort"] not in EFFORTS:
            return _err(f"Invalid value: '{body['reasoning_effort']}'.", "reasoning_effort",
                        "invalid_value")
    elif family == "chat" and "reasoning_effort" in body:
        return _err("Unsupported parameter: 'reasoning_effort' is not supported with this model.",
                    "reasoning_effort", "unsupported_parameter")
    return None


class FaultServer:
    def __init__(self, script: dict[int, str] | None = None, stall_seconds: float = 3.0,
                 reply: str = "7 5\nAssistant 1 was more detailed.", family: str = "chat",
                 echo: str | None = None, on_call=None, delay: float = 0.0):
        self.family = family
        self.on_call, self.delay = on_call, delay
        self.echo = echo  # a string a misbehaving server echoes into its error bodies
        self.rejected: list[dict] = []
        self.script = script or {}
        self.stall_seconds = stall_seconds
        self.reply = reply
        self.calls = 0
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.times: list[float] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):
                n = int(self.headers.get("content-length", 0))
                try:
                    body = json.loads(self.rfile.read(n) or b"{}")
                except json.JSONDecodeError:
                    body = None
                bad = validate_request(body, outer.family)
                if bad is not None:
                    with outer.lock:
                        outer.rejected.append(bad)
                    if outer.echo:
                        bad["error"]["message"] += f" (request auth: {outer.echo})"
                    return self._send(400, bad)
                with outer.lock:
                    outer.calls += 1
                    call = outer.calls
                    outer.bodies.append(body)
                    outer.headers.append(dict(self.headers))
                    outer.times.append(time.monotonic())
                if outer.on_call is not None:
                    outer.on_call(call)
                if outer.delay:
                    time.sleep(outer.delay)
                fault = outer.script.get(call)
                if fault == "429":
                    return self._send(429, {"error": {"message": "slow down"}}, {"Retry-After": "0.05"})
                if fault == "429date":
                    import email.utils

                    when = email.utils.formatdate(time.time() + 2, usegmt=True)
                    return self._send(429, {"error": {"message": "slow down"}}, {"Retry-After": when})
                if fault == "429ms":
                    return self._send(429, {"error": {"message": "slow down"}}, {"retry-after-ms": "700"})
                if fault == "500":
                    return self._send(500, {"error": {"message": "boom"}})
                if fault == "stall":
                    time.sleep(outer.stall_seconds)
                    return self._send(200, outer._ok(body))
                if fault == "badjson":
                    return self._send_raw(200, b'{"id": "x", "choices": [')
                if fault == "nochoice":
                    return self._send(200, {"id": "x", "object": "chat.completion", "created": 0,
                                            "model": body.get("model"), "choices": []})
                return self._send(200, outer._ok(body))

            def _send(self, code, obj, headers=None):
                self._send_raw(code, json.dumps(obj).encode(), headers)

            def _send_raw(self, code, data, headers=None):
                try:
                    self.send_response(code)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def _ok(self, body):
        return {"id": "chatcmpl-test", "object": "chat.completion", "created": 0,
                "model": body.get("model", "x"),
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": self.reply}}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}}

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

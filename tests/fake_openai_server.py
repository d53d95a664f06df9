"""TEST DOUBLE: a fault-injecting OpenAI-compatible chat server on loopback (tests only).

It answers POST /v1/chat/completions. A script maps the Nth call (1-based) to a fault:
'429' (with Retry-After), '500', 'stall' (sleeps past the client timeout), 'badjson',
'nochoice'. Other calls get a valid completion whose first line is "7 5".
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FaultServer:
    def __init__(self, script: dict[int, str] | None = None, stall_seconds: float = 3.0,
                 reply: str = "7 5\nAssistant 1 was more detailed."):
        self.script = script or {}
        self.stall_seconds = stall_seconds
        self.reply = reply
        self.calls = 0
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):
                n = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(n) or b"{}")
                with outer.lock:
                    outer.calls += 1
                    call = outer.calls
                    outer.bodies.append(body)
                    outer.headers.append(dict(self.headers))
                fault = outer.script.get(call)
                if fault == "429":
                    return self._send(429, {"error": {"message": "slow down"}}, {"Retry-After": "0.05"})
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

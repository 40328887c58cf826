"""A scripted OpenAI-compatible HTTP server on loopback, for tests of the real client.

Each role (told apart by its system prompt) has its own queue of actions, so calls from
different threads cannot steal each other's replies. Actions: `reply(obj_or_text)` (after
`after` seconds), `status(code, headers)` (answered without consuming the next action),
`stall(seconds)`. Requests are served at once, each on its own thread.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODELS = ("scripted-coder", "scripted-small")


@dataclass
class Action:
    kind: str  # "reply", "status", "stall"
    content: str = ""
    code: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def reply(content: Any, after: float = 0.0) -> Action:
    text = content if isinstance(content, str) else json.dumps(content)
    return Action("reply", text, seconds=after)


def status(code: int, headers: dict[str, str] | None = None) -> Action:
    return Action("status", code=code, headers=headers or {})


def stall(seconds: float) -> Action:
    return Action("stall", seconds=seconds)


def raw(body: str) -> Action:
    """A 200 whose body is `body` as is (not necessarily JSON)."""
    return Action("raw", content=body)


@dataclass
class Seen:
    role: str
    at: float
    action: str
    body: dict[str, Any]


def role_of(body: dict[str, Any]) -> str:
    system = next((m["content"] for m in body.get("messages", []) if m["role"] == "system"), "")
    for opening, role in (
        ("You are the Researcher", "researcher"),
        ("You are the Engineer's debugger", "engineer"),
        ("You are the Analyst", "analyst"),
    ):
        if system.startswith(opening):
            return role
    return "other"


class ScriptedServer:
    def __init__(
        self,
        api_key: str = "test-key",
        refuse_structured: frozenset[str] = frozenset(),
        refuse_max_tokens: bool = False,
    ):
        self.api_key = api_key
        self.refuse_structured = refuse_structured
        self.refuse_max_tokens = refuse_max_tokens
        self.queues: dict[str, deque[Action]] = {}
        self.defaults: dict[str, Callable[[int], Action]] = {}  # used once a queue is empty
        self.served: dict[str, int] = {}
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, code: int, obj: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(obj).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout): nothing to answer

            def _authorised(self) -> bool:
                if self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    self._send(401, {"error": {"message": "invalid api key", "type": "auth"}})
                    return False
                return True

            def do_GET(self) -> None:
                if not self._authorised():
                    return
                if self.path.rstrip("/").endswith("/models"):
                    data = [{"id": m, "object": "model", "owned_by": "test"} for m in MODELS]
                    self._send(200, {"object": "list", "data": data})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self._authorised():
                    return
                role = role_of(body)
                if body.get("model") not in MODELS:
                    self._send(404, {"error": {"message": f"model {body.get('model')} not found"}})
                    return
                if server.refuse_max_tokens and "max_tokens" in body:
                    server._note(role, "refused_max_tokens", body)
                    msg = (
                        "Unsupported parameter: 'max_tokens' is not supported with this "
                        "model. Use 'max_completion_tokens' instead."
                    )
                    self._send(400, {"error": {"message": msg}})
                    return
                if role in server.refuse_structured and "response_format" in body:
                    server._note(role, "refused_format", body)
                    self._send(400, {"error": {"message": "response_format is not supported"}})
                    return
                action = server._next(role)
                server._note(role, action.kind if action else "empty", body)
                if action is None:
                    self._send(500, {"error": {"message": f"script for {role} is empty"}})
                elif action.kind == "status":
                    msg = {"error": {"message": f"scripted {action.code}"}}
                    self._send(action.code, msg, action.headers)
                elif action.kind == "raw":
                    data = action.content.encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                elif action.kind == "stall":
                    time.sleep(action.seconds)
                    self._send(200, _completion(body["model"], "{}"))
                else:
                    time.sleep(action.seconds)
                    self._send(200, _completion(body["model"], action.content))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def script(self, role: str, *actions: Action) -> None:
        with self.lock:
            self.queues.setdefault(role, deque()).extend(actions)

    def left(self, role: str) -> int:
        with self.lock:
            return len(self.queues.get(role, ()))

    def _next(self, role: str) -> Action | None:
        with self.lock:
            n = self.served[role] = self.served.get(role, 0) + 1
            queue = self.queues.get(role)
            if queue:
                return queue.popleft()
            default = self.defaults.get(role)
            return default(n) if default else None

    def _note(self, role: str, action: str, body: dict[str, Any]) -> None:
        with self.lock:
            self.seen.append(Seen(role, time.monotonic(), action, body))

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _completion(model: str, content: str) -> dict[str, Any]:
    prompt_tokens, completion_tokens = 100, max(1, len(content) // 4)
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }

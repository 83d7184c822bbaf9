"""A fake vLLM OpenAI-compatible server on 127.0.0.1, for fast engine tests (the real one: tests/engine).

Speaks the endpoints the engine uses, in vLLM's formats: GET /health, GET /version, GET /v1/models
(base model + served adapters, with `root` / `parent`), POST /v1/load_lora_adapter, POST
/v1/completions (a `text_completion`). A completion's text is a pure function of (model, prompt,
seed, max_tokens), so a test can check which adapter and seed each row used, whatever the batching.

    with FakeVllm(root="/models/tiny-abc", key="k") as srv:
        srv.base_url                       # "http://127.0.0.1:<port>/v1"
        srv.script(["503", "ok"])          # modes of the next completions: ok | 503 | 400 | garbage | die
        srv.completions                    # every completion body received
        srv.die_after = 5                  # stop answering (close connections) after 5 completions
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def fake_text(model: str, prompt: str, seed, max_tokens: int) -> str:
    h = hashlib.sha256(json.dumps([model, prompt, seed, max_tokens]).encode()).hexdigest()[:10]
    return f" [{model}] {h}"


class FakeVllm:
    def __init__(self, root: str = "/models/base", key: str | None = None, runtime_loading: bool = True):
        self.root = root
        self.key = key
        self.runtime_loading = runtime_loading
        self.loras: dict[str, str] = {}
        self.completions: list[dict] = []
        self.loads: list[dict] = []
        self.problems: list[str] = []
        self.die_after: int | None = None
        self._script: list[str] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def script(self, modes: list[str]) -> None:
        with self._lock:
            self._script = list(modes)

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def _models(self) -> dict:
        data = [{"id": "base", "object": "model", "root": self.root, "parent": None}]
        data += [{"id": n, "object": "model", "root": p, "parent": "base"} for n, p in self.loras.items()]
        return {"object": "list", "data": data}

    def __enter__(self) -> "FakeVllm":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _json(self, status: int, obj, ctype: str = "application/json"):
                body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _authorized(self) -> bool:
                if fake.key and self.headers.get("Authorization") != f"Bearer {fake.key}":
                    self._json(401, {"error": {"message": "Unauthorized", "code": 401}})
                    return False
                return True

            def do_GET(self):  # noqa: N802 - http.server API
                if self.path == "/health":
                    return self._json(200, b"", ctype="text/plain")
                if self.path == "/version":
                    return self._json(200, {"version": "0.0.0-fake"})
                if self.path == "/v1/models" and self._authorized():
                    return self._json(200, fake._models())
                if self.path != "/v1/models":
                    self._json(404, {"detail": "Not Found"})

            def do_POST(self):  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not self._authorized():
                    return
                body = json.loads(raw or b"{}")
                if self.path == "/v1/load_lora_adapter":
                    with fake._lock:
                        fake.loads.append(body)
                    if not fake.runtime_loading:
                        return self._json(404, {"detail": "Not Found"})
                    fake.loras[body["lora_name"]] = body["lora_path"]
                    return self._json(200, b"Success", ctype="text/plain")
                if self.path != "/v1/completions":
                    return self._json(404, {"detail": "Not Found"})
                with fake._lock:
                    mode = fake._script.pop(0) if fake._script else "ok"
                    dead = fake.die_after is not None and len(fake.completions) >= fake.die_after
                    if not dead and mode == "ok":
                        fake.completions.append(body)
                if dead or mode == "die":
                    self.close_connection = True
                    self.connection.close()
                    return
                if mode in ("503", "500"):
                    return self._json(int(mode), {"error": {"message": "busy", "code": int(mode)}})
                if mode == "400":
                    return self._json(400, {"error": {"message": "This model's maximum context length is 8"}})
                if mode == "garbage":
                    return self._json(200, b"<html>proxy", ctype="text/html")
                model = body.get("model")
                if model != "base" and model not in fake.loras:
                    return self._json(404, {"error": {"message": f"The model `{model}` does not exist.", "code": 404}})
                if body.get("n", 1) != 1 or not isinstance(body.get("prompt"), str):
                    fake.problems.append(f"unexpected body {body}")
                text = fake_text(model, body["prompt"], body.get("seed"), body.get("max_tokens"))
                return self._json(
                    200,
                    {
                        "id": "cmpl-fake",
                        "object": "text_completion",
                        "model": model,
                        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "length"}],
                        "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
                    },
                )

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

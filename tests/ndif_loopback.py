"""A loopback NDIF server on 127.0.0.1 that speaks nnsight 0.8's remote protocol, for tests.

Run as a subprocess by the tests (`start_server`). It serves one model folder and answers what
nnsight's `RemoteBackend` asks, the way NDIF does:

    GET  /status              {"deployments": {...}}: the served model, RUNNING (saekit's reachability check);
                              401 when it carries a wrong `ndif-api-key` header
    GET  /subscribe           websocket: first message {"session_id"}, then the job's status updates
    POST /request             multipart form: `data` (RequestModel JSON), `blob` (the serialised trace,
                              zstd-compressed when `compress`); header `ndif-api-key`; answers RECEIVED
    GET  /response/{job_id}   the job's latest status (non-blocking polling), 404 before the first
    GET  /download/{job_id}   a result too large to send on the socket (COMPLETED carries this URL)
    GET  /stats               counters the tests read: which protocol paths were used

Each job is deserialised with `RequestModel.deserialize` against the served model's persistent
objects, executed (the trace body runs interleaved with the real model), and its saved values are
`torch.save`d (compressed when asked) and returned inline on the websocket as a pickled
ResponseModel (small results) or via /download (large ones). Failures come back as ERROR with the
exception's message. As on NDIF (ndif-team/ndif, `BaseModelDeployment`), the model's parameters are frozen
and jobs run without inference mode, so a trace can take gradients with respect to its own tensors. saekit cannot be imported in this process (NDIF does not have it), so every
saekit helper a request uses must travel by value. Listens on 127.0.0.1 only; stdlib HTTP and a
minimal RFC 6455 websocket, no extra dependencies.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.abc
import io
import json
import os
import queue
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
import uuid
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HOST = "127.0.0.1"
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class _NotInstalled(importlib.abc.MetaPathFinder):
    """NDIF does not have saekit: importing it here fails, as it would there."""

    def find_spec(self, name, path, target=None):
        if name == "saekit" or name.startswith("saekit."):
            raise ModuleNotFoundError(f"No module named {name!r} (not installed on this server)")
        return None


# -- websocket framing (server side: unmasked frames out, masked frames in) -------------------------


def ws_frame(payload: bytes, opcode: int) -> bytes:
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([n])
    elif n < 1 << 16:
        head += bytes([126]) + struct.pack("!H", n)
    else:
        head += bytes([127]) + struct.pack("!Q", n)
    return head + payload


def ws_read_frame(rfile) -> tuple[int, bytes] | None:
    head = rfile.read(2)
    if len(head) < 2:
        return None
    opcode, n = head[0] & 0x0F, head[1] & 0x7F
    if n == 126:
        n = struct.unpack("!H", rfile.read(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", rfile.read(8))[0]
    mask = rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
    data = bytearray(rfile.read(n))
    for i in range(len(data)):
        data[i] ^= mask[i % 4]
    return opcode, bytes(data)


class Session:
    def __init__(self, wfile) -> None:
        self.wfile = wfile
        self.lock = threading.Lock()

    def send(self, payload: bytes | str) -> None:
        binary = isinstance(payload, bytes)
        data = payload if binary else payload.encode()
        with self.lock:
            self.wfile.write(ws_frame(data, 0x2 if binary else 0x1))
            self.wfile.flush()


# -- the server -------------------------------------------------------------------------------------


class Loopback:
    def __init__(self, model_dir: str, api_key: str | None, inline_limit: int, inference_mode: bool = False) -> None:
        import torch  # noqa: F401  (before nnsight, as nnsight recommends)
        import transformers
        from nnsight import TransformersModel
        from nnsight.modeling import huggingface

        huggingface._ID_CACHE.setdefault(model_dir, model_dir)
        tok = transformers.AutoTokenizer.from_pretrained(model_dir)
        self.model = TransformersModel(model_dir, task="text-generation", tokenizer=tok, dispatch=True)
        self.model._module.eval()
        self.model._module.requires_grad_(False)  # as NDIF's model actor does (dispatched models are frozen)
        self.model_key = self.model.to_model_key()
        self.persistent = self.model._remoteable_persistent_objects()
        self.api_key = api_key
        self.inline_limit = inline_limit
        self.inference_mode = inference_mode  # a server that refuses gradients (tests its error)
        self.sessions: dict[str, Session] = {}
        self.statuses: dict[str, str] = {}
        self.downloads: dict[str, bytes] = {}
        self.stats = {"requests": 0, "ws_sessions": 0, "inline_results": 0, "url_results": 0, "downloads": 0,
                      "polls": 0, "errors": 0, "rejected_keys": 0, "compressed": 0}
        self.jobs: queue.Queue = queue.Queue()
        self.base_url = ""
        threading.Thread(target=self._worker, daemon=True).start()

    # one job at a time: the model has one interleaver
    def _worker(self) -> None:
        while True:
            job_id, request, blob = self.jobs.get()
            self._run(job_id, request, blob)

    def _status(self, job_id: str, session_id: str, status: str, description: str = "", data=None, binary=False) -> None:
        from nnsight.schema.response import ResponseModel

        response = ResponseModel(id=job_id, status=status, description=description, data=data)
        if binary:
            payload: bytes | str = response.pickle()
        else:
            payload = response.model_dump_json()
            self.statuses[job_id] = payload
        session = self.sessions.get(session_id)
        if session is not None:
            try:
                session.send(payload)
            except (OSError, ValueError):  # the client hung up
                self.sessions.pop(session_id, None)

    def _run(self, job_id: str, request, blob: bytes) -> None:
        import torch
        from nnsight.schema.request import RequestModel
        from nnsight.tracing.tracer import dec, inc

        sid = request.session_id
        self._status(job_id, sid, "QUEUED")
        try:
            if request.model_key != self.model_key:
                raise ValueError(f"model {request.model_key!r} is not served here (serving {self.model_key!r})")
            self.model._remoteable_set_env(request.env)
            tracer = RequestModel.deserialize(blob, self.persistent, compress=request.compress)
            _forget_sources(tracer.info.frame.f_code.co_filename)
            self._status(job_id, sid, "RUNNING")
            frame = tracer.info.frame
            pushed = _Recording(frame.f_locals)
            frame.f_locals = pushed
            inc()
            try:  # no inference mode, as on NDIF: a trace may turn autograd on and take gradients
                with torch.inference_mode(self.inference_mode):
                    tracer.execute(tracer.info.code)
            finally:
                dec()
            result = {k: pushed[k] for k in pushed.pushed}
            buf = io.BytesIO()
            torch.save(result, buf)
            content = buf.getvalue()
            if request.compress:
                import zstandard

                content = zstandard.ZstdCompressor(level=6).compress(content)
                self.stats["compressed"] += 1
            if len(content) <= self.inline_limit and sid in self.sessions:
                self.stats["inline_results"] += 1
                self.statuses[job_id] = _completed_json(job_id, None)
                self._status(job_id, sid, "COMPLETED", data=content, binary=True)
            else:
                self.stats["url_results"] += 1
                self.downloads[job_id] = content
                self._status(job_id, sid, "COMPLETED", data=f"{self.base_url}/download/{job_id}")
        except BaseException as e:  # noqa: BLE001 - every failure goes back to the client
            self.stats["errors"] += 1
            traceback.print_exc()
            self._status(job_id, sid, "ERROR", description=f"{type(e).__name__}: {e}")

    def handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _json(self, code: int, obj) -> None:
                body = (obj if isinstance(obj, str) else json.dumps(obj)).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path == "/subscribe" and self.headers.get("Upgrade", "").lower() == "websocket":
                    return self._subscribe()
                if path == "/status":
                    given = self.headers.get("ndif-api-key")
                    if server.api_key is not None and given is not None and given != server.api_key:
                        server.stats["rejected_keys"] += 1
                        return self._json(401, {"detail": "invalid API key"})
                    return self._json(200, {"deployments": {server.model_key: {
                        "repo_id": server.model_key, "model_key": server.model_key, "deployment_level": "HOT",
                        "application_state": "RUNNING", "revision": "main"}}})
                if path == "/stats":
                    return self._json(200, server.stats)
                if path.startswith("/response/"):
                    server.stats["polls"] += 1
                    status = server.statuses.get(path.rsplit("/", 1)[1])
                    return self._json(200, status) if status else self._json(404, {"detail": "no status yet"})
                if path.startswith("/download/"):
                    content = server.downloads.pop(path.rsplit("/", 1)[1], None)
                    if content is None:
                        return self._json(404, {"detail": "no such result"})
                    server.stats["downloads"] += 1
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(len(content)))
                    self.end_headers()
                    self.wfile.write(content)
                    return
                self._json(404, {"detail": f"no route {path}"})

            def _subscribe(self) -> None:
                accept = base64.b64encode(hashlib.sha1((self.headers["Sec-WebSocket-Key"] + WS_GUID).encode()).digest())
                self.send_response(101, "Switching Protocols")
                self.send_header("Upgrade", "websocket")
                self.send_header("Connection", "Upgrade")
                self.send_header("Sec-WebSocket-Accept", accept.decode())
                self.end_headers()
                self.wfile.flush()
                sid = uuid.uuid4().hex
                session = Session(self.wfile)
                server.sessions[sid] = session
                server.stats["ws_sessions"] += 1
                session.send(json.dumps({"session_id": sid}))
                try:
                    while True:
                        frame = ws_read_frame(self.rfile)
                        if frame is None or frame[0] == 0x8:  # closed
                            break
                        if frame[0] == 0x9:  # ping -> pong
                            with session.lock:
                                self.wfile.write(ws_frame(frame[1], 0xA))
                                self.wfile.flush()
                except OSError:
                    pass
                finally:
                    server.sessions.pop(sid, None)
                    self.close_connection = True

            def do_POST(self) -> None:
                from nnsight.schema.request import RequestModel
                from nnsight.schema.response import ResponseModel

                if self.path != "/request":
                    return self._json(404, {"detail": f"no route {self.path}"})
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if server.api_key is not None and self.headers.get("ndif-api-key") != server.api_key:
                    server.stats["rejected_keys"] += 1
                    return self._json(401, {"detail": "invalid or missing API key"})
                ctype = self.headers["Content-Type"]
                msg = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {ctype}\r\n\r\n".encode() + body)
                fields = {p.get_param("name", header="content-disposition"): p.get_payload(decode=True) for p in msg.iter_parts()}
                request = RequestModel.model_validate_json(fields["data"])
                job_id = uuid.uuid4().hex
                server.stats["requests"] += 1
                received = ResponseModel(id=job_id, status="RECEIVED").model_dump_json()
                server.statuses[job_id] = received
                self._json(200, received)
                server.jobs.put((job_id, request, fields["blob"]))

        return Handler


def _forget_sources(filename: str) -> None:
    """Isolate requests: nnsight memoises block sources per filename, and every request from one client
    file registers that file's name with its own block; a stale entry would make an inner trace
    (an invoke, a trace in a session) read the previous request's source."""
    from nnsight.tracing.globals import BLOCKS, SOURCES

    SOURCES.pop(filename, None)
    for key in [k for k in BLOCKS if k[0] == filename]:
        del BLOCKS[key]


def _completed_json(job_id: str, data) -> str:
    from nnsight.schema.response import ResponseModel

    return ResponseModel(id=job_id, status="COMPLETED", data=data).model_dump_json()


class _Recording(dict):
    """The request frame's locals; remembers which names the trace pushed back (its saved values)."""

    def __init__(self, base: dict) -> None:
        super().__init__(base)
        self.pushed: set[str] = set()

    def update(self, other=(), **kw) -> None:  # type: ignore[override]
        other = dict(other, **kw)
        self.pushed.update(other)
        super().update(other)


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--inline-limit", type=int, default=16_384)
    ap.add_argument("--inference-mode", action="store_true", help="run jobs in inference mode (no gradients)")
    args = ap.parse_args()
    sys.meta_path.insert(0, _NotInstalled())
    for name in list(sys.modules):
        if name == "saekit" or name.startswith("saekit."):
            del sys.modules[name]
    server = Loopback(args.model, args.api_key, args.inline_limit, args.inference_mode)
    httpd = ThreadingHTTPServer((HOST, 0), server.handler())
    httpd.daemon_threads = True
    server.base_url = f"http://{HOST}:{httpd.server_address[1]}"
    print(f"LISTENING {server.base_url}", flush=True)
    httpd.serve_forever()


# -- for the tests ----------------------------------------------------------------------------------


def start_server(
    model_dir: str | Path, api_key: str | None = None, inline_limit: int = 16_384, timeout: float = 120.0,
    inference_mode: bool = False,
):
    """Start the loopback server in a subprocess; return (process, base_url). Stop it with `stop_server`.
    `inference_mode`: run jobs in inference mode, as a server that allows no gradients would."""
    env = {k: v for k, v in os.environ.items() if k not in ("NDIF_API_KEY", "NDIF_HOST")}
    env["PYTHONPATH"] = ""  # nothing of the working tree: saekit is not importable over there
    cmd = [sys.executable, "-u", str(Path(__file__).resolve()), "--model", str(model_dir), "--inline-limit", str(inline_limit)]
    if api_key is not None:
        cmd += ["--api-key", api_key]
    if inference_mode:
        cmd += ["--inference-mode"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=str(Path(model_dir).parent))
    lines: list[str] = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("LISTENING "):
            url = line.split()[1]
            threading.Thread(target=lambda: [lines.append(x) for x in proc.stdout], daemon=True).start()
            proc.log = lines  # type: ignore[attr-defined]
            return proc, url
    proc.kill()
    raise RuntimeError("the loopback NDIF server did not start:\n" + "".join(lines[-40:]))


def stop_server(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def stats(url: str) -> dict:
    import httpx

    return httpx.get(f"{url}/stats", timeout=10).json()


if __name__ == "__main__":
    main()

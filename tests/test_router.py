"""The prefill/decode router against fake backends that record what they receive; one real-engine check."""

from __future__ import annotations

import importlib.util
import json
import shutil
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pytest_infer.deployment import Deployment, Role, RoleKind
from pytest_infer.launch.local import LocalLauncher, free_ports
from pytest_infer.launch.router import PREFILL_KV_PARAMS
from pytest_infer.matrix import Matrix, default_root

# A fake vLLM server: appends every POST to <record>; prefill answers with kv_transfer_params, decode
# streams three SSE chunks 0.3 s apart. Prompt "fail": the decode side answers 500; "reject": prefill 400.
FAKE_BACKEND = textwrap.dedent(
    """
    import http.server, json, os, sys, time
    port, kind, record, flag = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def reply(self, status, body, ctype="application/json"):
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/health":
                self.reply(503 if os.path.exists(flag) else 200, "")
            elif self.path == "/v1/models":
                self.reply(200, json.dumps({"data": [{"id": "fake-" + kind}]}))
            else:
                self.reply(404, "{}")

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with open(record, "a") as f:
                f.write(json.dumps({"path": self.path, "rid": self.headers.get("X-Request-Id"),
                                    "body": body}) + "\\n")
            if kind == "prefill" and body.get("prompt") == "reject":
                self.reply(400, json.dumps({"error": "prompt too long"}))
            elif kind == "prefill":
                self.reply(200, json.dumps({"choices": [{"text": "x"}],
                                            "kv_transfer_params": {"remote_engine_id": f"engine-{port}",
                                                                   "remote_block_ids": [1, 2]}}))
            elif body.get("prompt") == "fail":
                self.reply(500, json.dumps({"error": "decode exploded"}))
            elif body.get("stream"):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                parts = ["data: {\\"t\\": 0}\\n\\n", "data: {\\"t\\": 1}\\n\\n", "data: [DONE]\\n\\n"]
                for i, part in enumerate(parts):
                    if i:
                        time.sleep(0.3)
                    data = part.encode()
                    self.wfile.write(b"%x\\r\\n%s\\r\\n" % (len(data), data))
                    self.wfile.flush()
                self.wfile.write(b"0\\r\\n\\r\\n")
            else:
                self.reply(200, json.dumps({"choices": [{"text": "decoded"}], "port": port}))

        def log_message(self, *args):
            pass

    http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
    """
)


class Fakes:
    def __init__(self, tmp: Path, launcher: LocalLauncher, ports: dict[str, int]) -> None:
        self.tmp, self.launcher, self.ports = tmp, launcher, ports
        self.url = f"http://127.0.0.1:{ports['router']}"

    def received(self, name: str) -> list[dict[str, Any]]:
        path = self.tmp / f"{name}.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def clear(self) -> None:
        for path in self.tmp.glob("*.jsonl"):
            path.unlink()


@pytest.fixture(scope="module")
def fakes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fakes]:
    tmp = tmp_path_factory.mktemp("router")
    (tmp / "fake_backend.py").write_text(FAKE_BACKEND)
    names = ["prefill0", "prefill1", "decode0", "router"]
    ports = dict(zip(names, free_ports(len(names)), strict=True))

    def backend(name: str) -> Role:
        kind: RoleKind = "prefill" if name.startswith("prefill") else "decode"
        argv = ["python", str(tmp / "fake_backend.py"), str(ports[name]), kind, str(tmp / f"{name}.jsonl"),
                str(tmp / f"{name}.unhealthy")]
        return Role(name=name, kind=kind, argv=argv, env={}, gpus=0, host="127.0.0.1", port=ports[name])

    argv = ["python", "-m", "pytest_infer.launch.router", "--host", "127.0.0.1",
            "--port", str(ports["router"])]
    for name in names[:-1]:
        argv += [f"--{name[:-1]}", f"http://127.0.0.1:{ports[name]}"]
    router = Role(name="router", kind="router", argv=argv, env={}, gpus=0, host="127.0.0.1",
                  port=ports["router"])
    dep = Deployment(stack="s", engine="fake", gpu="cpu", model="m", served_name="m",
                     roles=[backend(n) for n in names[:-1]] + [router], endpoint="router", nodes=1)
    with LocalLauncher(dep, tmp / "logs", timeout=30) as launcher:
        yield Fakes(tmp, launcher, ports)


def test_prefill_then_decode(fakes: Fakes) -> None:
    fakes.clear()
    request = {"model": "m", "prompt": "hi", "max_tokens": 50, "min_tokens": 5, "stream_options": {}}
    r = httpx.post(fakes.url + "/v1/completions", json=request, headers={"X-Request-Id": "req-1"})
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == "decoded"
    (pre,) = fakes.received("prefill0") + fakes.received("prefill1")
    assert pre["path"] == "/v1/completions" and pre["rid"] == "req-1"
    assert pre["body"]["max_tokens"] == 1 and pre["body"]["stream"] is False
    assert pre["body"]["kv_transfer_params"] == PREFILL_KV_PARAMS
    assert "stream_options" not in pre["body"] and "min_tokens" not in pre["body"]
    (dec,) = fakes.received("decode0")
    assert dec["rid"] == "req-1"
    # The decode side gets the original request plus what the prefill server returned.
    assert dec["body"] == {**request, "kv_transfer_params": {"remote_engine_id": dec["body"][
        "kv_transfer_params"]["remote_engine_id"], "remote_block_ids": [1, 2]}}


def test_chat_round_robin_and_max_completion_tokens(fakes: Fakes) -> None:
    fakes.clear()
    request = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 9}
    for _ in range(4):
        assert httpx.post(fakes.url + "/v1/chat/completions", json=request).status_code == 200
    p0, p1 = fakes.received("prefill0"), fakes.received("prefill1")
    assert len(p0) == len(p1) == 2
    assert all(p["body"]["max_completion_tokens"] == 1 and p["path"] == "/v1/chat/completions" for p in p0)
    decoded = fakes.received("decode0")
    engines = [d["body"]["kv_transfer_params"]["remote_engine_id"] for d in decoded]
    # Alternating prefill servers, and each decode request carries the params of its own prefill.
    assert sorted(engines[:2]) == sorted(f"engine-{fakes.ports[n]}" for n in ("prefill0", "prefill1"))
    assert engines == engines[:2] * 2
    assert all(d["body"]["max_completion_tokens"] == 9 for d in decoded)
    assert len({d["rid"] for d in decoded}) == 4  # a fresh id per request when the client sent none


def test_streaming_is_relayed_as_it_arrives(fakes: Fakes) -> None:
    request = {"model": "m", "prompt": "hi", "max_tokens": 3, "stream": True}
    arrivals: list[float] = []
    chunks: list[bytes] = []
    with httpx.stream("POST", fakes.url + "/v1/completions", json=request) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for chunk in r.iter_raw():
            arrivals.append(time.monotonic())
            chunks.append(chunk)
    assert b"".join(chunks) == b'data: {"t": 0}\n\ndata: {"t": 1}\n\ndata: [DONE]\n\n'
    assert arrivals[-1] - arrivals[0] > 0.4  # not buffered until the end


def test_backend_error_passes_through(fakes: Fakes) -> None:
    r = httpx.post(fakes.url + "/v1/completions", json={"model": "m", "prompt": "fail", "max_tokens": 3})
    assert r.status_code == 500 and r.json() == {"error": "decode exploded"}
    fakes.clear()
    r = httpx.post(fakes.url + "/v1/completions", json={"model": "m", "prompt": "reject", "max_tokens": 3})
    assert r.status_code == 400 and r.json() == {"error": "prompt too long"}
    assert fakes.received("decode0") == []
    r = httpx.post(fakes.url + "/v1/completions", content=b"not json")
    assert r.status_code == 400


def test_health_aggregates_and_models_proxy(fakes: Fakes) -> None:
    assert httpx.get(fakes.url + "/health").status_code == 200
    flag = fakes.tmp / "prefill1.unhealthy"
    flag.touch()
    try:
        r = httpx.get(fakes.url + "/health")
        assert r.status_code == 503 and r.json()[f"http://127.0.0.1:{fakes.ports['prefill1']}"] == 503
    finally:
        flag.unlink()
    assert httpx.get(fakes.url + "/health").status_code == 200
    assert httpx.get(fakes.url + "/v1/models").json() == {"data": [{"id": "fake-decode"}]}
    fakes.launcher.check_alive()


# -- the real engine: ExampleConnector accepts the router's kv_transfer_params, output equals one server --

KV_CONFIG = json.dumps({"kv_connector": "ExampleConnector", "kv_role": "kv_both",
                        "kv_connector_extra_config": {"shared_storage_path": "SHARED"}})
PROMPT = "".join(f"The {i}th quick brown fox jumps over {i * 7 % 13} lazy dogs.\n" for i in range(7))


def _vllm(name: str, kind: RoleKind, model: Path, port: int, extra: list[str], env: dict[str, str]) -> Role:
    argv = ["vllm", "serve", str(model), "--served-model-name", "tiny", "--dtype", "bfloat16",
            "--enforce-eager", "--max-model-len", "1024", "--host", "127.0.0.1", "--port", str(port), *extra]
    return Role(name=name, kind=kind, argv=argv, env={"VLLM_CPU_KVCACHE_SPACE": "1", **env}, gpus=0,
                host="127.0.0.1", port=port)


def _complete(url: str) -> dict[str, Any]:
    request = {"model": "tiny", "prompt": PROMPT, "max_tokens": 16, "temperature": 0, "logprobs": 1}
    r = httpx.post(url + "/v1/completions", json=request, timeout=120)
    assert r.status_code == 200, r.text
    choice: dict[str, Any] = r.json()["choices"][0]
    return choice


@pytest.mark.engine
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed")
def test_example_connector_through_router(tmp_path: Path) -> None:
    """Real vLLM CPU prefill and decode servers (ExampleConnector) behind the matrix's router, vllm-router:
    greedy output identical to one server's, and the decode server loaded the prefill's KV."""
    from pytest_infer.tiny.model import build_tiny_model

    model = build_tiny_model(tmp_path / "model")
    (port,) = free_ports(1)
    one = Deployment(stack="plain", engine="vllm", gpu="cpu", model=str(model), served_name="tiny",
                     roles=[_vllm("server", "server", model, port, [], {})], endpoint="server", nodes=1)
    with LocalLauncher(one, tmp_path / "plain") as launcher:
        expected = _complete(launcher.deployment.endpoint_url)

    pp, dp, rp = free_ports(3)
    kv = ["--kv-transfer-config", KV_CONFIG.replace("SHARED", str(tmp_path / "kv"))]
    # The router the cpu matrix runs (vllm-router), as engines/base.py fills it in.
    spec = Matrix(default_root()).engines["vllm"].router
    (side,) = free_ports(1)
    values = {"${host}": "127.0.0.1", "${port}": str(rp), "${side_port}": str(side)}
    argv = [values.get(a, a) for a in spec.argv]
    assert argv[0] == "vllm-router" and "${" not in " ".join(argv), argv
    router = Role(name="router", kind="router", gpus=0, host="127.0.0.1", port=rp, env={}, health_path=spec.health_path,
                  argv=[*argv, "--prefill", f"http://127.0.0.1:{pp}", "--decode", f"http://127.0.0.1:{dp}"])
    pd = Deployment(stack="disagg", engine="vllm", gpu="cpu", model=str(model), served_name="tiny", nodes=1,
                    endpoint="router",
                    roles=[_vllm("prefill", "prefill", model, pp, kv, {"VLLM_CPU_OMP_THREADS_BIND": "0"}),
                           _vllm("decode", "decode", model, dp, kv, {"VLLM_CPU_OMP_THREADS_BIND": "1"}),
                           router])
    try:
        with LocalLauncher(pd, tmp_path / "pd") as launcher:
            got = _complete(launcher.deployment.endpoint_url)
            launcher.check_alive()
            decode_log = launcher.log_path("decode").read_text()
    finally:
        shutil.rmtree(tmp_path / "kv", ignore_errors=True)
    assert got["text"] == expected["text"]
    assert got["logprobs"]["tokens"] == expected["logprobs"]["tokens"]
    assert "External Cache Hit!" in decode_log and "Inject KV cache of" in decode_log

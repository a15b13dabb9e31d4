"""Prefill/decode router: the protocol of vLLM's NIXL toy proxy, for disaggregated serving.

Each completion goes first to a prefill server with max_tokens=1 and kv_transfer_params asking it to keep
the KV cache for a remote decode; then the original request goes to a decode server with the
kv_transfer_params the prefill server returned, and the decode response is relayed unchanged.

    python -m pytest_infer.launch.router --host H --port P --prefill URL ... --decode URL ...
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
from aiohttp import web

log = logging.getLogger("pytest_infer.router")

PREFILL_KV_PARAMS: dict[str, Any] = {
    "do_remote_decode": True,
    "do_remote_prefill": False,
    "remote_engine_id": None,
    "remote_block_ids": None,
    "remote_host": None,
    "remote_port": None,
}
SESSION = web.AppKey("session", aiohttp.ClientSession)
HOP_BY_HOP = {"content-length", "transfer-encoding", "connection", "content-encoding"}


class Backends:
    def __init__(self, prefill: list[str], decode: list[str]) -> None:
        self.prefill, self.decode = [u.rstrip("/") for u in prefill], [u.rstrip("/") for u in decode]
        self._next_prefill: Iterator[str] = itertools.cycle(self.prefill)
        self._next_decode: Iterator[str] = itertools.cycle(self.decode)

    def pick(self) -> tuple[str, str]:
        return next(self._next_prefill), next(self._next_decode)


BACKENDS = web.AppKey("backends", Backends)


def prefill_request(body: dict[str, Any]) -> dict[str, Any]:
    req = {**body, "stream": False, "max_tokens": 1, "kv_transfer_params": PREFILL_KV_PARAMS}
    if "max_completion_tokens" in req:
        req["max_completion_tokens"] = 1
    # The prefill server rejects min_tokens > max_tokens; the decode server gets them untouched.
    for key in ("stream_options", "min_tokens", "min_completion_tokens"):
        req.pop(key, None)
    return req


def _relay(resp: aiohttp.ClientResponse, body: bytes) -> web.Response:
    headers = {k: v for k, v in resp.headers.items() if k.lower() not in HOP_BY_HOP}
    return web.Response(status=resp.status, body=body, headers=headers)


async def completions(request: web.Request) -> web.StreamResponse:
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return web.json_response({"error": "request body must be a JSON object"}, status=400)
    session, (prefill, decode) = request.app[SESSION], request.app[BACKENDS].pick()
    # The same id on both sides lets the two servers' logs (and the connectors) be matched up.
    headers = {"X-Request-Id": request.headers.get("X-Request-Id") or str(uuid.uuid4())}
    if "Authorization" in request.headers:
        headers["Authorization"] = request.headers["Authorization"]
    try:
        async with session.post(prefill + request.path, json=prefill_request(body), headers=headers) as resp:
            data = await resp.read()
            if resp.status != 200:  # a failing prefill is the client's failure too, with its own status
                return _relay(resp, data)
        kv_params = json.loads(data).get("kv_transfer_params")
        decode_body = {**body, "kv_transfer_params": kv_params} if kv_params else body
        async with session.post(decode + request.path, json=decode_body, headers=headers) as resp:
            if resp.status != 200 or not body.get("stream"):
                return _relay(resp, await resp.read())
            out = web.StreamResponse(status=resp.status, headers={"Content-Type": resp.content_type})
            await out.prepare(request)
            async for chunk in resp.content.iter_any():  # relay SSE bytes as they arrive
                await out.write(chunk)
            await out.write_eof()
            return out
    except aiohttp.ClientError as e:
        return web.json_response({"error": f"backend unreachable: {e!r}"}, status=502)


async def _status(session: aiohttp.ClientSession, url: str) -> int:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
            return resp.status
    except (TimeoutError, aiohttp.ClientError):
        return 0


async def health(request: web.Request) -> web.Response:
    backends = request.app[BACKENDS]
    urls = backends.prefill + backends.decode
    codes = await asyncio.gather(*(_status(request.app[SESSION], u + "/health") for u in urls))
    ok = all(c == 200 for c in codes)
    return web.json_response(dict(zip(urls, codes, strict=True)), status=200 if ok else 503)


async def models(request: web.Request) -> web.Response:
    async with request.app[SESSION].get(request.app[BACKENDS].decode[0] + "/v1/models") as resp:
        return _relay(resp, await resp.read())


async def _client_session(app: web.Application) -> AsyncIterator[None]:
    # No total timeout (long generations) and no connection cap (benchmark concurrency can exceed 100).
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        app[SESSION] = session
        yield


def make_app(prefill: list[str], decode: list[str]) -> web.Application:
    app = web.Application(client_max_size=64 * 1024**2)
    app[BACKENDS] = Backends(prefill, decode)
    app.cleanup_ctx.append(_client_session)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--prefill", action="append", required=True, metavar="URL")
    parser.add_argument("--decode", action="append", required=True, metavar="URL")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log.info("routing prefill=%s decode=%s on %s:%d", args.prefill, args.decode, args.host, args.port)
    # No access log: one line per request would cost time in the benchmarks this router sits in.
    web.run_app(make_app(args.prefill, args.decode), host=args.host, port=args.port, access_log=None)


if __name__ == "__main__":
    main()

"""A tiny OpenAI-compatible completions server for the plugin's own unit tests (never a stand-in for
the engine in a suite). Streams `max_tokens` tokens with FAKE_TOKEN_DELAY seconds between them, and
slows down as more requests run at once (like a real engine: delay = FAKE_TOKEN_DELAY x (1 + active / 4)),
so tests get real-looking throughput-interactivity curves and can make one stack slower than another.
With FAKE_SPEC_ACCEPT (a fraction) it reports vLLM's speculative-decoding counters on /metrics as if
one token were drafted per generated token and that share accepted; FAKE_SPEC_ACCEPT_PAST_ANSWER sets
the share for arithmetic requests with no stop string (fixed-length greedy prompts that run past the
answer, where the tiny model's MTP layer was never trained and accepts far less). `--max-num-seqs N` caps the requests
decoded at once (the rest queue), as vLLM's flag does. With FAKE_ARITH it answers "A+B=" prompts with the
sum and a newline (as the repo's tiny model should), and FAKE_CORRUPT (a fraction) makes that share of
prompts (chosen by a hash of the prompt, so the same ones every time) answer sum + 1. With FAKE_CUT_EVERY=k
every k-th streamed request sends one token and ends the stream cleanly, as an engine dying after the
response headers: `vllm bench serve` counts it as a success."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import socket
import time

from aiohttp import web

DELAY = float(os.environ.get("FAKE_TOKEN_DELAY", "0.002"))
ACCEPT = os.environ.get("FAKE_SPEC_ACCEPT")
PAST_ANSWER = os.environ.get("FAKE_SPEC_ACCEPT_PAST_ANSWER")
ACTIVE = 0
GENERATED = 0
DRAFTED = 0.0
ACCEPTED = 0.0


def _generated(n: int, past_answer: bool = False) -> None:
    """n tokens generated; with a drafter, n drafted and a share of them accepted."""
    global GENERATED, DRAFTED, ACCEPTED
    GENERATED += n
    if ACCEPT is not None:
        DRAFTED += n
        ACCEPTED += n * float(PAST_ANSWER if past_answer and PAST_ANSWER is not None else ACCEPT)
SEQS: asyncio.Semaphore | None = None


async def metrics(_: web.Request) -> web.Response:
    lines = [f"vllm:num_requests_running{{engine=\"0\"}} {ACTIVE}", f"vllm:generation_tokens_total {GENERATED}"]
    if ACCEPT is not None:
        lines += [f"vllm:spec_decode_num_draft_tokens_total {DRAFTED}",
                  f"vllm:spec_decode_num_accepted_tokens_total {ACCEPTED}"]
    return web.Response(text="\n".join(lines) + "\n")


async def health(_: web.Request) -> web.Response:
    return web.Response(text="ok")


async def models(_: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})


def _arith(prompt: str, stop: list[str]) -> str:
    """The sum for an "A+B=" prompt (a wrong one for the corrupted share), cut at the first stop string."""
    hit = re.search(r"(\d+)\+(\d+)=$", prompt)
    total = int(hit.group(1)) + int(hit.group(2)) if hit else 0
    corrupt = float(os.environ.get("FAKE_CORRUPT", "0"))
    if corrupt and hashlib.sha256(prompt.encode()).digest()[0] < corrupt * 256:
        total += 1
    text = f"{total}\n{total}\n"
    for s in stop:
        if s in text:
            text = text[: text.index(s)]
    return text


async def completions(request: web.Request) -> web.StreamResponse | web.Response:
    if os.environ.get("FAKE_FAIL"):  # a stack that starts, then answers every request with a 500
        print("NotImplementedError: fake all_gatherv", flush=True)
        raise web.HTTPInternalServerError(text="EngineCore encountered an issue")
    body = await request.json()
    n = int(body.get("max_tokens") or 16)
    prompt = body.get("prompt", "")
    if os.environ.get("FAKE_ARITH") and not body.get("stream"):
        stop = body.get("stop") or []
        stops = [stop] if isinstance(stop, str) else list(stop)
        texts = [_arith(str(p), stops) for p in (prompt if isinstance(prompt, list) else [prompt])]
        _generated(len(texts) if stops else n * len(texts), past_answer=not stops)
        return web.json_response({"id": "x", "object": "text_completion", "model": "fake",
                                  "choices": [{"index": i, "text": t, "finish_reason": "stop"}
                                              for i, t in enumerate(texts)],
                                  "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(texts)}})
    if not body.get("stream"):
        await asyncio.sleep(DELAY * n)
        return web.json_response({"id": "x", "object": "text_completion", "model": "fake",
                                  "choices": [{"index": 0, "text": "a" * n, "finish_reason": "length"}],
                                  "usage": {"prompt_tokens": len(prompt), "completion_tokens": n}})
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    assert SEQS is not None
    async with SEQS:
        return await _stream(resp, n, prompt)


CUT_EVERY = int(os.environ.get("FAKE_CUT_EVERY", "0"))
STREAMS = 0


async def _stream(resp: web.StreamResponse, n: int, prompt: str) -> web.StreamResponse:
    global ACTIVE, STREAMS
    ACTIVE += 1
    STREAMS += 1
    cut = bool(CUT_EVERY) and STREAMS % CUT_EVERY == 0
    if cut:
        n = 1  # one token, then the stream just ends: no usage, no [DONE]
    try:
        for i in range(n):
            await asyncio.sleep(DELAY * (1 + ACTIVE / 4))
            chunk = {"id": "x", "object": "text_completion", "created": int(time.time()), "model": "fake",
                     "choices": [{"index": 0, "text": "a", "finish_reason": "length" if i == n - 1 else None}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
            _generated(1)
    finally:
        ACTIVE -= 1
    if cut:
        return resp
    usage = {"prompt_tokens": len(prompt), "completion_tokens": n}
    await resp.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode())
    await resp.write(b"data: [DONE]\n\n")
    return resp


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--max-num-seqs", type=int, default=256)
    args, _ = ap.parse_known_args()
    global SEQS
    SEQS = asyncio.Semaphore(args.max_num_seqs)  # the rest stands for engine flags from the fake matrix
    app = web.Application()
    app.add_routes([web.get("/health", health), web.get("/v1/models", models), web.get("/metrics", metrics),
                    web.post("/v1/completions", completions)])
    taken_once = os.environ.get("FAKE_PORT_TAKEN_ONCE")  # a marker file: the first start finds its port taken
    if taken_once and not os.path.exists(taken_once):
        open(taken_once, "w").close()
        squatter = socket.socket()  # someone else binds the port between the launcher choosing and us binding
        squatter.bind((args.host, args.port))
        squatter.listen()
    web.run_app(app, host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()

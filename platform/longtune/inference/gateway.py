"""The async half of the OpenAI-compatible gateway: proxy to a replica, shape OpenAI bodies.

Replica protocol (internal, 127.0.0.1/cluster only; see workers/inference.py):
``POST {internal_url}/generate`` with the validated request; the replica answers only once
the first token exists (or the request failed), so input errors found by the engine — a
prompt longer than the context — still arrive as a 4xx status with the coded envelope. A
200 body is NDJSON: ``{"type": "start", "prompt_tokens"}``, ``{"type": "delta", "text",
"tokens"}`` lines, then one ``{"type": "done", "finish_reason", "prompt_tokens",
"completion_tokens", "ttft_ms", "tokens_per_second"}``. A stream the client abandons is
metered with the tokens generated so far.

Everything here is ``async``: a stream awaits the replica's socket instead of holding a
thread, so many SSE streams share one ASGI worker.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
import weakref
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from asgiref.sync import sync_to_async

from longtune.api.errors import ApiError
from longtune.inference import routing
from longtune.inference.conf import inference_conf
from longtune.inference.services import Metered, Route, record_usage

CHAT = "chat.completion"
TEXT = "text_completion"


@dataclass
class GatewayCall:
    """A validated, authorized request bound to the replica that will serve it."""

    kind: str  # CHAT | TEXT
    org: Any
    api_key: Any
    route: Route
    body: dict[str, Any]  # the replica request (prompt or messages + sampling)
    stream: bool
    include_usage: bool
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def response_id(self) -> str:
        return ("chatcmpl-" if self.kind == CHAT else "cmpl-") + self.request_id


def replica_request(
    *, messages: list[dict] | None, prompt: str | None, data: dict[str, Any], route: Route
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "adapter": route.adapter,
        "max_tokens": data.get("max_tokens"),
        "temperature": data["temperature"],
        "top_p": data["top_p"],
        "stop": data.get("stop") or [],
        "seed": data.get("seed"),
    }
    if messages is not None:
        body["messages"] = [{"role": m["role"], "content": m["content"]} for m in messages]
    else:
        body["prompt"] = prompt
    return body


# --------------------------------------------------------------------------- upstream


def _upstream_error(status: int, raw: bytes) -> ApiError:
    try:
        error = json.loads(raw)["error"]
        return ApiError(
            status=status, code=error["code"], message=error["message"], param=error.get("param")
        )
    except (ValueError, KeyError, TypeError):
        return ApiError(status=502, code="replica_error", message="The replica answered badly.")


# One pooled aiohttp session per event loop, shared by every request on it. Why pooled: a
# client per request builds an SSL context (milliseconds of CPU each) and opens a fresh TCP
# connection per request; the gateway then added seconds to the time to first token at a few
# dozen concurrent streams. Why aiohttp and not httpx: the same 200 concurrent streams of 18
# NDJSON lines cost ~5 ms of gateway CPU per request through httpx's pure-Python pool and h11
# parser, ~0.7 ms through aiohttp's C parser (benchmarks/results/gateway_per_request_cpu.md).
# Keyed by loop: a session's connections belong to its loop.
_REPLICA_SESSIONS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, tuple[aiohttp.ClientSession, AsyncGenerator[None, None]]
] = weakref.WeakKeyDictionary()
# What a replica connection may fail with: aiohttp's own errors, and timeouts (a connect or
# read timeout is an asyncio.TimeoutError).
UPSTREAM_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)


async def _closed_with_its_loop(
    loop: asyncio.AbstractEventLoop, session: aiohttp.ClientSession
) -> AsyncGenerator[None, None]:
    """Held open for the loop's lifetime; the loop finalizes it when it shuts down
    (``asyncio.run`` — uvicorn's and asgiref's ``async_to_sync`` loops alike — closes every
    live async generator), which closes the session on its own loop: no loop leaves an
    unclosed session (and its sockets) behind."""
    try:
        yield
    finally:
        _REPLICA_SESSIONS.pop(loop, None)
        await session.close()


async def replica_session() -> aiohttp.ClientSession:
    """The running loop's shared session (made on first use)."""
    loop = asyncio.get_running_loop()
    held = _REPLICA_SESSIONS.get(loop)
    if held is not None and not held[0].closed:
        return held[0]
    session = aiohttp.ClientSession(
        # No cap on connections: each concurrent stream holds one; the replica bounds load.
        # Idle sockets expire well before a server's keep-alive timeout (uvicorn: 5 s), so a
        # request never goes out on a socket the replica is closing.
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=1.0),
        trust_env=False,
    )
    keeper = _closed_with_its_loop(loop, session)
    await keeper.asend(None)
    _REPLICA_SESSIONS[loop] = (session, keeper)
    return session


def _lines(buffer: bytearray, chunk: bytes) -> list[bytes]:
    """Append ``chunk``; return the complete lines it finished (``buffer`` keeps the rest).
    Split by hand rather than with the stream's readline: a line has no length limit here."""
    buffer += chunk
    *lines, rest = bytes(buffer).split(b"\n")
    buffer[:] = rest
    return lines


class Upstream:
    """One streaming request to a replica. ``open`` raises the replica's coded error."""

    def __init__(self, call: GatewayCall) -> None:
        self.call = call
        self._response: aiohttp.ClientResponse | None = None

    async def open(self) -> None:
        body = {**self.call.body, "request_id": self.call.request_id}
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=5.0, sock_read=inference_conf().request_timeout_seconds
        )
        session = await replica_session()
        try:
            self._response = await session.post(
                self.call.route.internal_url.rstrip("/") + "/generate", json=body, timeout=timeout
            )
        except UPSTREAM_ERRORS as exc:
            await self.close()
            # A cached route to a replica that died without saying so: the next request
            # resolves from the database (inference/routing.py) instead of trying it again.
            routing.forget(self.call.org, self.call.route.model)
            raise ApiError(
                status=503,
                code="replica_unavailable",
                message=f"The endpoint's replica could not be reached ({type(exc).__name__}).",
                headers={"Retry-After": "5"},
            ) from exc
        if self._response.status != 200:
            status = self._response.status
            try:
                raw = await self._response.read()
            except UPSTREAM_ERRORS:
                raw = b""
            await self.close()
            raise _upstream_error(status, raw)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        assert self._response is not None, "open() first"
        buffer = bytearray()
        try:
            async for chunk in self._response.content.iter_any():
                for line in _lines(buffer, chunk):
                    if line.strip():
                        yield json.loads(line)
            if buffer.strip():
                yield json.loads(bytes(buffer))
        except UPSTREAM_ERRORS as exc:
            yield {
                "type": "error",
                "code": "replica_unavailable",
                "message": f"The replica stream broke ({type(exc).__name__}).",
            }

    async def drain(self) -> None:
        """Read what is left of the body (after the ``done`` line only the body's end), so
        that ``close`` can hand the connection back to the pool instead of closing it."""
        if self._response is None:
            return
        try:
            await self._response.content.read()
        except UPSTREAM_ERRORS:
            pass  # close() then closes the connection

    async def close(self) -> None:
        """Release this request's connection: back to the shared pool when the body was read
        to its end, closed mid-stream otherwise (which cancels the generation on the replica)."""
        if self._response is None:
            return
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


# --------------------------------------------------------------------------- metering


def _metered(done: dict[str, Any]) -> Metered:
    return Metered(
        prompt_tokens=int(done["prompt_tokens"]),
        completion_tokens=int(done["completion_tokens"]),
        ttft_ms=done.get("ttft_ms"),
        tokens_per_second=done.get("tokens_per_second"),
    )


async def meter(call: GatewayCall, done: dict[str, Any]) -> dict[str, int]:
    """Write the usage row; returns the OpenAI ``usage`` object the client sees (same numbers)."""
    metered = _metered(done)
    await sync_to_async(record_usage)(
        org=call.org,
        route=call.route,
        api_key=call.api_key,
        kind=call.kind,
        request_id=call.response_id,
        stream=call.stream,
        metered=metered,
    )
    return {
        "prompt_tokens": metered.prompt_tokens,
        "completion_tokens": metered.completion_tokens,
        "total_tokens": metered.prompt_tokens + metered.completion_tokens,
    }


def _finish_reason(reason: str | None) -> str:
    return "length" if reason == "length" else "stop"


def _failed(event: dict[str, Any]) -> ApiError:
    """An in-band replica error (after the 200 status line) as the API's coded error."""
    status = event.get("status")
    return ApiError(
        status=status if isinstance(status, int) and 400 <= status < 600 else 500,
        code=str(event.get("code", "generation_failed")),
        message=str(event.get("message", "Generation failed.")),
        param=event.get("param"),
    )


# --------------------------------------------------------------------------- non-streaming


async def complete(call: GatewayCall, upstream: Upstream) -> dict[str, Any]:
    """Drain the replica stream into one OpenAI response body (and meter it)."""
    parts: list[str] = []
    done: dict[str, Any] | None = None
    try:
        async for event in upstream.events():
            if event["type"] == "delta":
                parts.append(event["text"])
            elif event["type"] == "done":
                done = event
            elif event["type"] == "error":
                raise _failed(event)
    finally:
        await upstream.close()
    if done is None:
        raise ApiError(status=502, code="replica_error", message="The replica stream ended early.")
    usage = await meter(call, done)
    text, reason = "".join(parts), _finish_reason(done.get("finish_reason"))
    if call.kind == CHAT:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": None},
            "finish_reason": reason,
            "logprobs": None,
        }
    else:
        choice = {"index": 0, "text": text, "finish_reason": reason, "logprobs": None}
    return {
        "id": call.response_id,
        "object": call.kind,
        "created": call.created,
        "model": call.route.model,
        "choices": [choice],
        "usage": usage,
        "system_fingerprint": call.route.endpoint_public_id,
    }


# --------------------------------------------------------------------------- streaming (SSE)


def _sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


def _chunk(call: GatewayCall, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "id": call.response_id,
        "object": "chat.completion.chunk" if call.kind == CHAT else TEXT,
        "created": call.created,
        "model": call.route.model,
        "system_fingerprint": call.route.endpoint_public_id,
        "choices": choices,
        **extra,
    }


def _text_choice(call: GatewayCall, text: str, reason: str | None, *, first: bool) -> dict:
    if call.kind == CHAT:
        delta: dict[str, Any] = {"content": text} if text or first else {}
        if first:
            delta["role"] = "assistant"
        return {"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}
    return {"index": 0, "text": text, "finish_reason": reason, "logprobs": None}


class _Progress:
    """Tokens seen so far on a stream (for metering one the client abandons)."""

    def __init__(self) -> None:
        self.prompt_tokens: int | None = None
        self.completion_tokens = 0
        self.metered = False

    def partial(self) -> dict[str, Any] | None:
        if self.metered or self.prompt_tokens is None:
            return None
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}


async def sse_stream(call: GatewayCall, upstream: Upstream) -> AsyncIterator[bytes]:
    """OpenAI SSE: chunks, a final chunk with finish_reason, [usage chunk], ``[DONE]``.
    Closing the generator (client went away) closes the replica connection, which cancels
    the generation there, and meters the tokens generated until then."""
    progress = _Progress()
    first = True
    try:
        async for event in upstream.events():
            kind = event["type"]
            if kind == "start":
                progress.prompt_tokens = int(event["prompt_tokens"])
            elif kind == "delta":
                progress.completion_tokens += int(event.get("tokens", 0))
                if not event["text"] and not first:
                    continue
                yield _sse(_chunk(call, [_text_choice(call, event["text"], None, first=first)]))
                first = False
            elif kind == "done":
                progress.metered = True
                usage = await meter(call, event)
                reason = _finish_reason(event.get("finish_reason"))
                yield _sse(_chunk(call, [_text_choice(call, "", reason, first=first)]))
                if call.include_usage:
                    yield _sse(_chunk(call, [], usage=usage))
                yield _sse("[DONE]")
                await upstream.drain()  # the body's end: the connection goes back to the pool
                return
            else:
                yield _sse(_failed(event).body())
                return
        yield _sse(
            {"error": {"type": "server_error", "code": "replica_error",
                       "message": "The replica stream ended early.", "param": None}}
        )  # fmt: skip
    finally:
        await upstream.close()
        partial = progress.partial()
        if partial is not None:
            # shield: the metering write finishes even when this task is being cancelled.
            await asyncio.shield(meter(call, partial))

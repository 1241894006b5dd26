"""RequestHandle: the caller's side of one submitted request (thread-safe, sync and async).

The scheduler thread appends deltas; any number of threads may `stream()` / `result()`, and
an asyncio task may `astream()` without blocking its event loop (the scheduler wakes it with
`call_soon_threadsafe`), which is what an ASGI gateway streaming SSE needs.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator

from gpu_runtime.serving.types import GenerationResult, ServingError, StreamDelta


class RequestHandle:
    def __init__(self, request_id: str, on_cancel: Callable[[str], None]) -> None:
        self.request_id = request_id
        self._on_cancel = on_cancel
        self._cond = threading.Condition()
        self._deltas: list[StreamDelta] = []
        self._result: GenerationResult | None = None
        self._error: ServingError | None = None
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    # ----------------------------------------------------------------- scheduler side
    def _push(self, delta: StreamDelta) -> None:
        with self._cond:
            self._deltas.append(delta)
            self._wake()

    def _finish(self, result: GenerationResult) -> None:
        with self._cond:
            self._result = result
            self._wake()

    def _fail(self, error: ServingError) -> None:
        with self._cond:
            self._error = error
            self._wake()

    def _wake(self) -> None:  # caller holds self._cond
        self._cond.notify_all()
        for loop, event in self._async_waiters:
            loop.call_soon_threadsafe(event.set)

    # ----------------------------------------------------------------- caller side
    @property
    def done(self) -> bool:
        with self._cond:
            return self._result is not None or self._error is not None

    def cancel(self) -> None:
        """Stop generating (e.g. the HTTP client went away); result() then says "cancelled"."""
        self._on_cancel(self.request_id)

    def result(self, timeout: float | None = None) -> GenerationResult:
        """Block until finished; raises the request's ServingError if it failed."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._result or self._error, timeout):
                raise TimeoutError(f"request {self.request_id} not finished after {timeout}s")
            if self._error is not None:
                raise self._error
            assert self._result is not None
            return self._result

    def stream(self, timeout: float | None = None) -> Iterator[StreamDelta]:
        """Deltas as they are produced, ending with the one that carries finish_reason."""
        index = 0
        while True:
            with self._cond:
                ready = self._cond.wait_for(
                    lambda seen=index: len(self._deltas) > seen or self._result or self._error,
                    timeout,
                )
                if not ready:
                    raise TimeoutError(f"no output from request {self.request_id} in {timeout}s")
                new, finished, error = self._deltas[index:], self._result, self._error
            index += len(new)
            yield from new
            if error is not None:
                raise error
            if finished is not None and index == len(self._deltas):
                return

    async def astream(self) -> AsyncIterator[StreamDelta]:
        """`stream()` for asyncio: awaits without holding a thread."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        with self._cond:
            self._async_waiters.append((loop, event))
        index = 0
        try:
            while True:
                event.clear()
                with self._cond:
                    new, finished, error = self._deltas[index:], self._result, self._error
                index += len(new)
                for delta in new:
                    yield delta
                if error is not None:
                    raise error
                if finished is not None and not new:
                    return
                if not new:
                    await event.wait()
        finally:
            with self._cond:
                self._async_waiters.remove((loop, event))

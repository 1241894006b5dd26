"""Gateway under load: 200 concurrent chat completions through one ASGI process to one replica.

Reproduce:
    python benchmarks/gateway_load.py                       # 200 concurrent, 3 rounds per mode
    python benchmarks/gateway_load.py --services            # PostgreSQL + Redis (scripts/services.sh)
    python benchmarks/gateway_load.py --quick               # seconds; what the smoke test runs

Question: what does the gateway (``/v1/chat/completions``: API-key auth, throttle, monthly
token quota, routing, SSE re-framing, the usage row) add to a request, at 200 concurrent
streams, and how much memory does its process take?

Setup: one uvicorn process serving ``longtune.asgi`` as ``scripts/run.sh`` starts it, on the
embedded default (SQLite under a temporary LONGTUNE_VAR_DIR, no Redis), or with ``--services``
on PostgreSQL (a fresh ``<db>_gwbench`` database) and Redis (the token counter of
inference/token_meter.py). One org with roomy quotas, one ready endpoint whose replica is a
**fake replica HTTP peer** (an ASGI app in its own uvicorn process, this file's
``--serve-replica`` mode) that speaks the replica protocol of workers/inference.py: it waits
``--ttft-ms`` before the first token, then sends ``--tokens`` tokens ``--token-ms`` apart. A fake
peer, not a model, so the figure is the gateway's and not the engine's.

Baseline in the same run: the same concurrent requests sent straight to the replica's
``/generate``. Added latency = gateway percentile - direct percentile. TTFT = request sent ->
first token's bytes received (an SSE chunk with content via the gateway, the first ``delta``
line direct); non-streaming: request sent -> whole body received. Memory: the gateway
process's RSS (``/proc``), idle after a warm-up and the peak sampled every 20 ms under load.
Client: one asyncio httpx client in this process, one connection per concurrent request.
Every request must complete without error (status 200, a final ``[DONE]`` / a full body).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MODEL = "bench-gw"
REPRODUCE = (
    "python benchmarks/gateway_load.py --concurrency {concurrency} --rounds {rounds} "
    "--ttft-ms {ttft_ms} --tokens {tokens} --token-ms {token_ms}{services}"
)


# --------------------------------------------------------------------------- the fake replica


def replica_app(ttft_ms: float, tokens: int, token_ms: float):
    """An ASGI app speaking the replica protocol (workers/inference.py): NDJSON events
    ``start``, ``delta`` x tokens, ``done``; ``GET /health``."""

    async def app(scope, receive, send):
        if scope["method"] == "GET":
            body = json.dumps({"status": "ok", "adapters": [None]}).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})  # fmt: skip
            await send({"type": "http.response.body", "body": body})
            return
        more = True
        while more:  # drain the request body
            more = (await receive()).get("more_body", False)
        await asyncio.sleep(ttft_ms / 1000)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/x-ndjson")]})  # fmt: skip

        async def line(payload: dict) -> None:
            data = json.dumps(payload).encode() + b"\n"
            await send({"type": "http.response.body", "body": data, "more_body": True})

        await line({"type": "start", "prompt_tokens": 12})
        for i in range(tokens):
            if i:
                await asyncio.sleep(token_ms / 1000)
            await line({"type": "delta", "text": f" tok{i}", "tokens": 1})
        await line({"type": "done", "finish_reason": "length", "prompt_tokens": 12,
                    "completion_tokens": tokens, "ttft_ms": ttft_ms, "tokens_per_second": None})  # fmt: skip
        await send({"type": "http.response.body", "body": b""})

    return app


def serve_replica(port: int, ttft_ms: float, tokens: int, token_ms: float) -> None:
    import uvicorn

    uvicorn.run(replica_app(ttft_ms, tokens, token_ms), host="127.0.0.1", port=port,
                log_level="warning", backlog=4096, lifespan="off")  # fmt: skip


def serve_gateway_profiled(port: int, profile_path: Path) -> None:
    """The gateway as ``scripts/run.sh`` starts it (uvicorn, ``longtune.asgi``), under cProfile.

    Why not ``python -m cProfile -m uvicorn``: uvicorn re-raises SIGTERM after its graceful
    shutdown, the default handler kills the process and cProfile never writes its file. Here a
    Python SIGTERM handler (the one uvicorn restores and re-raises to) exits normally, so the
    profile of the whole run is dumped. cProfile sees one thread; the sync half of a request
    (``sync_to_async``: auth, validation, routing, the usage row) runs on another, so every
    thread started here gets a profiler of its own and all are merged into one file."""
    import cProfile
    import pstats
    import signal

    import uvicorn

    profilers: list[cProfile.Profile] = []

    def profile_this_thread(*_: object) -> None:
        profiler = cProfile.Profile(time.thread_time)  # CPU, not waits
        profilers.append(profiler)
        profiler.enable()  # replaces this hook in the thread it first runs in

    def leave(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, leave)
    threading.setprofile(profile_this_thread)
    sys.path[:0] = [str(ROOT / "platform")]
    main_profiler = cProfile.Profile(time.thread_time)  # CPU, not waits
    profilers.append(main_profiler)
    main_profiler.enable()
    try:
        uvicorn.run("longtune.asgi:application", host="127.0.0.1", port=port,
                    log_level="warning", backlog=4096)  # fmt: skip
    finally:
        main_profiler.disable()
        stats = pstats.Stats(main_profiler)
        for profiler in profilers[1:]:
            profiler.create_stats()
            stats.add(profiler)
        stats.dump_stats(profile_path)


# --------------------------------------------------------------------------- setup


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on {port}")


def prepare(replica_url: str) -> str:
    """Migrate; the org (roomy quotas), a base model, a ready endpoint on the fake replica.
    Returns the API key secret."""
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, check=True
    )
    sys.path[:0] = [str(ROOT / "platform"), str(ROOT)]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "longtune.settings")
    import django

    django.setup()
    from django.utils import timezone

    from longtune.catalog.models import BaseModel
    from longtune.inference.models import Endpoint, Replica
    from longtune.tenancy.models import OrgQuota
    from longtune.tenancy.services.organizations import create_organization_with_owner

    created = create_organization_with_owner(
        email="bench@example.com", password="bench-password-123", org_name="Bench", plan="pro"
    )
    OrgQuota.objects.create(
        org=created.org, requests_per_minute=10**7, monthly_inference_tokens=10**15
    )
    base = BaseModel.objects.create(
        name=MODEL, location="/nonexistent", original_context_length=4096,
        max_context_length=4096,
    )  # fmt: skip
    endpoint = Endpoint.objects.create(
        org=created.org, model=MODEL, base_model=base, context_length=4096, status="ready"
    )
    Replica.objects.create(
        org=created.org, endpoint=endpoint, generation=endpoint.generation,
        internal_url=replica_url, status="ready", heartbeat_at=timezone.now(),
    )  # fmt: skip
    return created.secret


# --------------------------------------------------------------------------- measuring


@dataclass
class Mode:
    name: str
    ttft_ms: list[float] = field(default_factory=list)
    total_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16}


async def one_request(client, mode: Mode, *, via_gateway: bool, stream: bool, secret: str) -> None:
    if via_gateway:
        url, body = "/v1/chat/completions", {**CHAT, "stream": stream}
        headers = {"Authorization": f"Bearer {secret}"}
    else:
        url, body, headers = "/generate", {"messages": CHAT["messages"], "max_tokens": 16}, {}
    started = time.perf_counter()
    first: float | None = None
    try:
        async with client.stream("POST", url, json=body, headers=headers) as response:
            if response.status_code != 200:
                mode.errors.append(f"{response.status_code} {(await response.aread())[:200]!r}")
                return
            if not stream:
                raw = await response.aread()
                if via_gateway:
                    complete = bool(json.loads(raw)["choices"][0]["message"]["content"])
                else:  # the replica always streams: its whole NDJSON body ends with "done"
                    complete = json.loads(raw.splitlines()[-1])["type"] == "done"
                if not complete:
                    mode.errors.append("incomplete response")
                    return
            else:
                done = False
                async for line in response.aiter_lines():
                    if first is None and (
                        ('"content"' in line and line.startswith("data: "))
                        or '"type": "delta"' in line
                    ):
                        first = time.perf_counter()
                    if line == "data: [DONE]" or '"type": "done"' in line:
                        done = True
                if not done or first is None:
                    mode.errors.append("stream ended early")
                    return
    except Exception as exc:  # noqa: BLE001 - every failure is counted, none may happen
        mode.errors.append(f"{type(exc).__name__}: {exc}")
        return
    end = time.perf_counter()
    if first is not None:
        mode.ttft_ms.append((first - started) * 1000)
    mode.total_ms.append((end - started) * 1000)


async def run_mode(base_url: str, mode: Mode, *, concurrency: int, rounds: int, **kw) -> None:
    import httpx

    # keepalive_expiry under uvicorn's 5 s idle timeout: never reuse a socket the server closes.
    limits = httpx.Limits(
        max_connections=concurrency, max_keepalive_connections=concurrency, keepalive_expiry=1.0
    )
    async with httpx.AsyncClient(
        base_url=base_url, limits=limits, timeout=120, trust_env=False
    ) as client:
        for _ in range(rounds):
            await asyncio.gather(*(one_request(client, mode, **kw) for _ in range(concurrency)))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat, clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int, field_name: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


class PeakRss:
    """The peak RSS of a process, sampled every 20 ms while the block runs."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()

    def __enter__(self) -> PeakRss:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            time.sleep(0.02)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --------------------------------------------------------------------------- main


def configure_environment(args, var_dir: str) -> str:
    """The gateway process's environment; returns a label of the configuration."""
    os.environ["LONGTUNE_VAR_DIR"] = var_dir
    os.environ["INFERENCE_STALE_AFTER_SECONDS"] = "86400"  # the fake replica sends no heartbeat
    if args.services:
        url = os.environ.get("DATABASE_URL", "")
        if not url.startswith(("postgres://", "postgresql://")) or not os.environ.get("REDIS_URL"):
            raise SystemExit("--services needs DATABASE_URL and REDIS_URL: scripts/services.sh")
        os.environ["DATABASE_URL"] = _fresh_database(url)
        os.environ["DB_CONN_MAX_AGE"] = "60"
        return "PostgreSQL + Redis"
    for name in ("DATABASE_URL", "REDIS_URL", "S3_BUCKET", "S3_ENDPOINT_URL"):
        os.environ.pop(name, None)  # the embedded default
    return "embedded default (SQLite, no Redis)"


def _fresh_database(url: str) -> str:
    """``<db>_gwbench`` next to the configured database, created from scratch; its URL."""
    from urllib.parse import urlparse, urlunparse

    import psycopg

    parsed = urlparse(url)
    name = parsed.path.lstrip("/") + "_gwbench"
    admin = urlunparse(parsed._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunparse(parsed._replace(path="/" + name))


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="waves of --concurrency per mode")
    parser.add_argument("--ttft-ms", type=float, default=50.0, help="the fake replica's TTFT")
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--token-ms", type=float, default=10.0)
    parser.add_argument("--services", action="store_true", help="PostgreSQL + Redis")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    parser.add_argument("--serve-replica", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--serve-gateway", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--profile-gateway", type=Path, help="write the gateway's cProfile here")
    args = parser.parse_args(argv)
    if args.serve_replica:
        serve_replica(args.serve_replica, args.ttft_ms, args.tokens, args.token_ms)
        return Path()
    if args.serve_gateway:
        serve_gateway_profiled(args.serve_gateway, args.profile_gateway)
        return Path()
    if args.quick:
        args.concurrency, args.rounds = 10, 1

    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    sys.path[:0] = [str(ROOT)]
    label = configure_environment(args, tempfile.mkdtemp(prefix="gateway-load-"))
    replica_port, gateway_port = free_port(), free_port()
    replica = subprocess.Popen(
        [sys.executable, __file__, "--serve-replica", str(replica_port),
         "--ttft-ms", str(args.ttft_ms), "--tokens", str(args.tokens),
         "--token-ms", str(args.token_ms)],
        cwd=ROOT,
    )  # fmt: skip
    secret = prepare(f"http://127.0.0.1:{replica_port}")
    log = (Path(os.environ["LONGTUNE_VAR_DIR"]) / "gateway.log").open("wb")  # its INFO lines
    if args.profile_gateway:
        command = [__file__, "--serve-gateway", str(gateway_port),
                   "--profile-gateway", str(args.profile_gateway.resolve())]  # fmt: skip
    else:
        command = ["-m", "uvicorn", "longtune.asgi:application", "--app-dir", "platform",
                   "--host", "127.0.0.1", "--port", str(gateway_port), "--log-level", "warning",
                   "--backlog", "4096"]  # fmt: skip
    gateway = subprocess.Popen(
        [sys.executable, *command],
        cwd=ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    replica_url, gateway_url = (
        f"http://127.0.0.1:{replica_port}",
        f"http://127.0.0.1:{gateway_port}",
    )
    modes = {
        "direct, streaming": Mode("direct, streaming"),
        "gateway, streaming": Mode("gateway, streaming"),
        "direct, non-streaming": Mode("direct, non-streaming"),
        "gateway, non-streaming": Mode("gateway, non-streaming"),
    }
    try:
        wait_for_port(replica_port)
        wait_for_port(gateway_port)
        warm = Mode("warm-up")
        asyncio.run(run_mode(gateway_url, warm, concurrency=4, rounds=2, via_gateway=True,
                             stream=True, secret=secret))  # fmt: skip
        if warm.errors:
            raise SystemExit(f"warm-up failed: {warm.errors[:3]}")
        idle_kib = rss_kib(gateway.pid)
        peaks: dict[str, int] = {}
        cpu: dict[str, float] = {}
        for name, mode in modes.items():
            via_gateway, stream = name.startswith("gateway"), "non-" not in name
            with PeakRss(gateway.pid) as peak:
                started, cpu_before = time.perf_counter(), cpu_seconds(gateway.pid)
                asyncio.run(run_mode(
                    gateway_url if via_gateway else replica_url, mode,
                    concurrency=args.concurrency, rounds=args.rounds,
                    via_gateway=via_gateway, stream=stream, secret=secret,
                ))  # fmt: skip
                mode_seconds = time.perf_counter() - started
                cpu[name] = cpu_seconds(gateway.pid) - cpu_before
            peaks[name] = peak.peak
            print(f"{name}: {len(mode.total_ms)} ok, {len(mode.errors)} errors, "
                  f"{mode_seconds:.1f} s", flush=True)  # fmt: skip
    finally:
        for proc in (gateway, replica):
            proc.terminate()
        for proc in (gateway, replica):
            try:
                proc.wait(120 if args.profile_gateway else 30)  # merging the profiles takes a while
            except subprocess.TimeoutExpired:
                proc.kill()

    text = report(args, label, modes, idle_kib, peaks, cpu)
    print(text)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    suffix = "_services" if args.services else ""
    out = args.output_dir / f"gateway_load{suffix}.md"
    out.write_text(text)
    failed = sum(len(m.errors) for m in modes.values())
    if failed:
        raise SystemExit(f"{failed} requests failed: {[m.errors[:2] for m in modes.values()]}")
    return out


def report(
    args,
    label: str,
    modes: dict[str, Mode],
    idle_kib: int,
    peaks: dict[str, int],
    cpu: dict[str, float],
) -> str:
    services = " --services" if args.services else ""
    total = args.concurrency * args.rounds
    lines = [
        f"# Gateway under load: {args.concurrency} concurrent chat completions, one ASGI process, "
        f"one replica ({label})",
        "",
        f"Reproduce: `{REPRODUCE.format(**{**vars(args), 'services': services})}`",
        "",
        f"{total} requests per mode ({args.rounds} waves of {args.concurrency} at once); fake "
        f"replica: TTFT {args.ttft_ms:g} ms, {args.tokens} tokens {args.token_ms:g} ms apart; "
        f"{os.cpu_count()} CPU cores shared by client, gateway and replica.",
        "",
        "| mode | ok | errors | TTFT p50 ms | TTFT p99 ms | total p50 ms | total p99 ms | "
        "gateway peak RSS MiB | gateway CPU ms/request |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in modes.items():
        ttft = (
            f"{percentile(m.ttft_ms, 0.5):.1f} | {percentile(m.ttft_ms, 0.99):.1f}"
            if m.ttft_ms
            else "— | —"
        )
        lines.append(
            f"| {name} | {len(m.total_ms)} | {len(m.errors)} | {ttft} | "
            f"{percentile(m.total_ms, 0.5):.1f} | {percentile(m.total_ms, 0.99):.1f} | "
            f"{peaks.get(name, 0) / 1024:.0f} | "
            f"{1000 * cpu.get(name, 0.0) / max(1, len(m.total_ms) + len(m.errors)):.1f} |"
        )
    s_direct, s_gw = modes["direct, streaming"], modes["gateway, streaming"]
    n_direct, n_gw = modes["direct, non-streaming"], modes["gateway, non-streaming"]
    lines += [
        "",
        "| added by the gateway | p50 ms | p99 ms |",
        "|---|---|---|",
        f"| streaming: time to first token | "
        f"{percentile(s_gw.ttft_ms, 0.5) - percentile(s_direct.ttft_ms, 0.5):.1f} | "
        f"{percentile(s_gw.ttft_ms, 0.99) - percentile(s_direct.ttft_ms, 0.99):.1f} |",
        f"| streaming: whole stream | "
        f"{percentile(s_gw.total_ms, 0.5) - percentile(s_direct.total_ms, 0.5):.1f} | "
        f"{percentile(s_gw.total_ms, 0.99) - percentile(s_direct.total_ms, 0.99):.1f} |",
        f"| non-streaming: whole response | "
        f"{percentile(n_gw.total_ms, 0.5) - percentile(n_direct.total_ms, 0.5):.1f} | "
        f"{percentile(n_gw.total_ms, 0.99) - percentile(n_direct.total_ms, 0.99):.1f} |",
        "",
        f"Gateway process RSS: {idle_kib / 1024:.0f} MiB idle after warm-up; peak "
        f"{max(peaks.get('gateway, streaming', 0), 0) / 1024:.0f} MiB under {args.concurrency} "
        f"concurrent streams, {peaks.get('gateway, non-streaming', 0) / 1024:.0f} MiB non-streaming.",
        "",
        "The CPU column is the gateway process's user + system time per request, which does not "
        "depend on how busy the machine is; wall-clock latencies on a shared machine do (load "
        f"average at the end of the run: {os.getloadavg()[0]:.1f}).",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

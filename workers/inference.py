"""Serving replicas: ``serve_endpoint`` runs ONE replica of an endpoint until it is stopped.

(Shared endpoints of a base or a LoRA fine-tune ride their base's shared server instead:
workers/shared_servers.py, which reuses this module's engine, HTTP server and heartbeats.)

A replica is a Celery task on the endpoint's queue (``inference`` or ``inference.<org>``)
that HOLDS ITS WORKER SLOT for as long as the endpoint runs: size the inference pool as
"replicas wanted + 1". The task
  1. claims the endpoint's generation (pending -> loading) — a redelivered or stale message
     finds nothing to claim and returns at once;
  2. builds one InferenceEngine: the base loaded once; a LoRA fine-tune is downloaded from
     object storage and registered as an adapter (a full fine-tune is the base itself); a
     one-token warm-up loads the adapter and its RoPE group before the endpoint says ready;
  3. serves an internal HTTP API on 127.0.0.1:<free port> (stdlib ThreadingHTTPServer, one
     thread per request; the engine batches them) and registers that URL;
  4. heartbeats into the DB every few seconds and exits when the endpoint is stopped,
     deleted or restarted, or the worker shuts down.

Internal protocol (only the gateway calls it): ``POST /generate`` with ``{"messages" |
"prompt", "adapter", "max_tokens", "temperature", "top_p", "stop", "seed", "request_id"}``.
The status line is written once the first token exists, so input errors the engine finds
(context too long, unknown adapter) are real 4xx statuses; the 200 body is NDJSON: a
``start`` line (prompt tokens), deltas (text + token count) and a final ``done`` line with
usage and timings. A client that hangs up cancels its request.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from celery.signals import worker_shutting_down
from django.db import close_old_connections

from longtune.catalog.resolution import serves_as_adapter
from longtune.compute import tasks
from longtune.inference import services, shared_servers
from longtune.inference.conf import InferenceConf, inference_conf
from longtune.inference.models import Endpoint
from longtune.storage import get_storage
from workers.celery_app import app
from workers.heartbeat import BackgroundHeartbeat

logger = logging.getLogger("longtune.inference")

MAX_REQUEST_BYTES = 32 * 1024 * 1024
worker_stopping = threading.Event()


@worker_shutting_down.connect
def _on_worker_shutdown(**_: Any) -> None:
    """Warm shutdown: let running replicas stop cleanly (endpoint -> stopped)."""
    worker_stopping.set()


# --------------------------------------------------------------------------- the engine


@dataclass(frozen=True)
class ServedModel:
    """What this replica serves: the adapter name (None: the base itself) and its context.

    ``context_length`` is read back from the served model (``engine.context``: the ContextSpec
    its saved config records), never from a DB row; it only sizes the default completion
    budget — the fits check itself is the engine's (see Generator.submit)."""

    adapter: str | None
    context_length: int


def download_artifact(endpoint: Endpoint, conf: InferenceConf) -> Path:
    """The fine-tuned artifact (adapter or full weights) in a local folder of this replica."""
    target = conf.work_dir / endpoint.public_id / f"gen-{endpoint.generation}"
    shutil.rmtree(target, ignore_errors=True)
    get_storage().download_dir(endpoint.fine_tuned_model.artifact_prefix, target)
    return target


def build_engine(endpoint: Endpoint, conf: InferenceConf) -> tuple[Any, ServedModel]:
    from gpu_runtime.serving import EngineConfig, InferenceEngine

    fine_tuned = endpoint.fine_tuned_model
    if fine_tuned is None:
        engine = InferenceEngine(EngineConfig(base_model=endpoint.base_model.location))
        return engine, served_model(engine, None)
    artifact = download_artifact(endpoint, conf)
    if serves_as_adapter(fine_tuned):
        engine = InferenceEngine(EngineConfig(base_model=endpoint.base_model.location))
        engine.register_adapter(endpoint.model, str(artifact))
        return engine, served_model(engine, endpoint.model)
    engine = InferenceEngine(EngineConfig(base_model=str(artifact)))  # full fine-tune
    return engine, served_model(engine, None)


def served_model(engine: Any, adapter: str | None) -> ServedModel:
    """`adapter` (None: the engine's base) at the context its saved config records."""
    return ServedModel(adapter, engine.context(adapter).target_length)


def warm_up(engine: Any, served: ServedModel) -> dict[str, Any]:
    """One greedy token through the served model: loads the adapter / RoPE group now, so a
    broken artifact fails the endpoint instead of its first caller."""
    from gpu_runtime.serving import GenerationRequest, SamplingParams

    token = engine.tokenizer.bos_token_id
    token = 0 if token is None else token
    result = engine.generate(
        GenerationRequest(
            prompt_token_ids=[token],
            adapter=served.adapter,
            sampling=SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True),
        ),
        timeout=600,
    )
    return {"warmup_ms": round(result.metrics.total_s * 1000, 1)}


# --------------------------------------------------------------------------- HTTP server


class ReplicaError(Exception):
    def __init__(self, status: int, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param


def _status_for(error: Exception) -> int:
    from gpu_runtime.serving import (
        EngineClosedError,
        InvalidRequestError,
        UnknownAdapterError,
    )

    if isinstance(error, UnknownAdapterError):
        return 404
    if isinstance(error, InvalidRequestError):
        return 400
    if isinstance(error, EngineClosedError):
        return 503
    return 500


class Generator:
    """Turns one internal request body into a submitted engine request.

    A replica serves one model; a shared server serves many (one per hosted endpoint, the
    base itself as adapter None). ``serve`` / ``unserve`` are reference-counted because two
    endpoints (of one org or several) may serve the same model name."""

    def __init__(self, engine: Any, served: ServedModel | None, conf: InferenceConf) -> None:
        self.engine, self.conf = engine, conf
        self._lock = threading.Lock()
        self._served: dict[str | None, tuple[ServedModel, int]] = {}
        if served is not None:
            self.serve(served)

    def serve(self, served: ServedModel) -> None:
        with self._lock:
            _, count = self._served.get(served.adapter, (served, 0))
            self._served[served.adapter] = (served, count + 1)

    def unserve(self, adapter: str | None) -> bool:
        """Drop one reference; True when the model is no longer served at all."""
        with self._lock:
            served, count = self._served[adapter]
            if count > 1:
                self._served[adapter] = (served, count - 1)
                return False
            del self._served[adapter]
            return True

    @property
    def adapters(self) -> list[str | None]:
        with self._lock:
            return list(self._served)

    def served_model(self, adapter: str | None) -> ServedModel:
        with self._lock:
            entry = self._served.get(adapter)
        if entry is None:
            raise ReplicaError(404, "model_not_found", "This replica does not serve that model.")
        return entry[0]

    def prompt_ids(self, body: dict[str, Any]) -> tuple[list[int], str]:
        from gpu_runtime.serving import chat_prompt_token_ids

        if "messages" in body:
            return chat_prompt_token_ids(self.engine.tokenizer, body["messages"]), "messages"
        return self.engine.tokenizer(body["prompt"]).input_ids, "prompt"

    def submit(self, body: dict[str, Any]) -> tuple[Any, int]:
        """The engine request for ``body``. No fits check here: the engine runs THE one
        (ContextSpec.overflow against the spec of the instance that serves the request — for an
        adapter known only once its group loads) and its ContextLengthError reaches the caller
        as a coded 400; a prompt that already fills the context asks for one token so that
        check, not a sampling error, reports it."""
        from gpu_runtime.serving import GenerationRequest, SamplingParams

        served = self.served_model(body.get("adapter"))
        ids, _ = self.prompt_ids(body)
        room = served.context_length - len(ids)
        max_tokens = body.get("max_tokens") or max(1, min(self.conf.default_max_tokens, room))
        sampling = SamplingParams(
            max_tokens=int(max_tokens),
            temperature=float(body.get("temperature", 1.0)),
            top_p=float(body.get("top_p", 1.0)),
            seed=body.get("seed"),
            stop=tuple(body.get("stop") or ()),
        )
        request = GenerationRequest(
            prompt_token_ids=ids,
            adapter=served.adapter,
            sampling=sampling,
            request_id=str(body.get("request_id") or os.urandom(8).hex()),
        )
        return self.engine.submit(request), len(ids)


def delta_event(delta: Any) -> dict[str, Any]:
    return {"type": "delta", "text": delta.text, "tokens": len(delta.token_ids)}


def done_event(result: Any) -> dict[str, Any]:
    metrics = result.metrics
    tokens_per_second = metrics.decode_tokens_per_s
    if tokens_per_second is None and metrics.total_s > 0:
        tokens_per_second = result.usage.completion_tokens / metrics.total_s
    return {
        "type": "done",
        "finish_reason": result.finish_reason,
        "prompt_tokens": result.usage.prompt_tokens,
        "completion_tokens": result.usage.completion_tokens,
        "ttft_ms": None if metrics.ttft_s is None else round(metrics.ttft_s * 1000, 2),
        "tokens_per_second": None if tokens_per_second is None else round(tokens_per_second, 2),
    }


def make_handler(generator: Generator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "LongTuneReplica/1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
            logger.debug("replica %s - " + format, self.address_string(), *args)

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            if self.path == "/health":
                self._json(200, {"status": "ok", "adapters": generator.adapters})
            else:
                self._json(404, {"error": {"code": "not_found", "message": self.path}})

        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            if self.path != "/generate":
                self._json(404, {"error": {"code": "not_found", "message": self.path}})
                return
            body: dict[str, Any] = {}
            try:
                body = self._body()
                handle, prompt_tokens = generator.submit(body)
                deltas = handle.stream(timeout=generator.conf.request_timeout_seconds)
                first = next(deltas, None)  # the status line waits for the first token
            except ReplicaError as exc:
                self._error(exc.status, exc.code, exc.message, exc.param)
                return
            except Exception as exc:  # noqa: BLE001 - engine errors carry code/field
                self._error(
                    _status_for(exc),
                    getattr(exc, "code", "generation_failed"),
                    getattr(exc, "message", str(exc)),
                    _param(_field_of(getattr(exc, "field", None), body)),
                )
                return
            self._stream(handle, prompt_tokens, first, deltas)

        def _stream(self, handle: Any, prompt_tokens: int, first: Any, deltas: Any) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.end_headers()
            try:
                # Token counts ride along so a stream cut short can still be metered.
                self._line({"type": "start", "prompt_tokens": prompt_tokens})
                if first is not None:
                    self._line(delta_event(first))
                for delta in deltas:
                    self._line(delta_event(delta))
                self._line(done_event(handle.result(timeout=30)))
            except (BrokenPipeError, ConnectionResetError):
                handle.cancel()  # the gateway's client went away
            except Exception as exc:  # noqa: BLE001 - report in-band, the status is sent
                logger.exception("replica request failed mid-stream")
                self._line(
                    {
                        "type": "error",
                        "status": _status_for(exc),
                        "code": getattr(exc, "code", "generation_failed"),
                        "message": getattr(exc, "message", str(exc)),
                    }
                )

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_REQUEST_BYTES:
                raise ReplicaError(400, "invalid_body", "A JSON body is required.")
            try:
                body = json.loads(self.rfile.read(length))
            except ValueError:
                raise ReplicaError(400, "invalid_json", "The body is not JSON.") from None
            if not isinstance(body, dict) or ("messages" in body) == ("prompt" in body):
                raise ReplicaError(400, "invalid_body", "Give exactly one of messages, prompt.")
            return body

        def _line(self, payload: dict[str, Any]) -> None:
            self.wfile.write(json.dumps(payload).encode() + b"\n")
            self.wfile.flush()

        def _json(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, code: str, message: str, param: str | None) -> None:
            body = {"code": code, "message": message, "param": param}
            self._json(HTTPStatus(status), {"error": body})

    return Handler


def _field_of(field: str | None, body: dict[str, Any]) -> str | None:
    """The engine says "prompt" for token ids; the API names the field the client sent."""
    if field == "prompt" and "messages" in body:
        return "messages"
    return field


def _param(field: str | None) -> str | None:
    """Engine field names ("messages[0]") in the API's dotted form ("messages.0")."""
    if field is None:
        return None
    return field.replace("[", ".").replace("]", "")


class ReplicaServer:
    """The replica's HTTP server on 127.0.0.1 and a free port, served from a thread."""

    def __init__(self, generator: Generator, host: str = "127.0.0.1") -> None:
        self.httpd = ThreadingHTTPServer((host, 0), make_handler(generator))
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="replica-http", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --------------------------------------------------------------------------- the task


def run_replica(endpoint_pk: int, generation: int, worker: str) -> dict[str, Any]:
    claimed = services.claim_for_replica(endpoint_pk, generation, worker, os.getpid())
    if claimed is None:
        logger.info("endpoint %s generation %s: nothing to claim", endpoint_pk, generation)
        return {"endpoint": endpoint_pk, "generation": generation, "skipped": True}
    endpoint, replica = claimed
    conf = inference_conf()
    engine = server = None
    try:
        with BackgroundHeartbeat(
            partial(services.replica_heartbeat, replica),
            every_seconds=conf.heartbeat_seconds,
            name="replica-load-hb",
        ):
            engine, served = build_engine(endpoint, conf)
            details = warm_up(engine, served)
        server = ReplicaServer(Generator(engine, served, conf))
        server.start()
        details.update(context_length=served.context_length, adapter=served.adapter)
        if services.mark_ready(replica, server.url, details):
            while not worker_stopping.wait(conf.heartbeat_seconds):
                close_old_connections()
                if not services.replica_heartbeat(replica):
                    break
        services.finish_replica(replica)
        return {"endpoint": endpoint.public_id, "status": "stopped"}
    except Exception as exc:
        logger.exception("replica for %s failed", endpoint.public_id)
        services.finish_replica(
            replica, error={"code": "replica_failed", "message": f"{type(exc).__name__}: {exc}"}
        )
        return {"endpoint": endpoint.public_id, "status": "failed"}
    finally:
        if server is not None:
            server.stop()
        if engine is not None:
            engine.shutdown()


@app.task(name=tasks.INFERENCE_WATCHDOG)
def watchdog() -> dict[str, Any]:
    """Periodic (celery beat): restart endpoints whose replica's worker died."""
    return {
        "restarted": services.recover_lost_replicas(),
        "servers": shared_servers.recover_lost_servers(),
    }


@app.task(name=tasks.SERVE_ENDPOINT, bind=True)
def serve_endpoint(self, endpoint_pk: int, generation: int) -> dict[str, Any]:
    return run_replica(endpoint_pk, generation, self.request.hostname or "worker")

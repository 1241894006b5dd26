"""Shared servers: ``serve_shared_base`` runs ONE base model's shared serving process.

The process loads the base once and then, every heartbeat, claims the endpoints attached to
its ``SharedServer`` row (``platform/longtune/inference/shared_servers.py``) exactly like an
own-process replica claims its endpoint — adapter downloaded and registered, one warm-up
token, ``mark_ready`` — heartbeats their Replica rows, and retires the ones whose endpoint
was stopped (their adapter is unregistered from the engine). With no endpoint attached for
``INFERENCE_SHARED_IDLE_SECONDS`` it stops itself and frees the worker slot. The HTTP
protocol is the own-process replica's (workers/inference.py): one server, many models.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from django.db import close_old_connections

from longtune.compute import tasks
from longtune.inference import services, shared_servers
from longtune.inference.conf import InferenceConf, inference_conf
from longtune.inference.models import Endpoint
from workers.celery_app import app
from workers.heartbeat import BackgroundHeartbeat
from workers.inference import (
    Generator,
    ReplicaServer,
    ServedModel,
    download_artifact,
    served_model,
    warm_up,
    worker_stopping,
)

logger = logging.getLogger("longtune.inference")


def build_shared_engine(server: Any, conf: InferenceConf) -> Any:
    """The shared server's engine: the base loaded once; adapters join as endpoints attach,
    gathered into paged buffers (one forward per mixed-adapter batch) within the conf's
    bounds."""
    from gpu_runtime.serving import EngineConfig, InferenceEngine

    return InferenceEngine(
        EngineConfig(
            base_model=server.base_model.location,
            max_loaded_adapters=conf.shared_max_adapters,
            max_adapter_bytes=conf.shared_adapter_bytes,
        )
    )


def attach_endpoint(engine: Any, endpoint: Endpoint, conf: InferenceConf) -> ServedModel:
    """Make `endpoint`'s model servable on a shared engine (LoRA adapter or the base)."""
    if endpoint.fine_tuned_model is None:
        return served_model(engine, None)
    artifact = download_artifact(endpoint, conf)
    engine.register_adapter(endpoint.model, str(artifact))
    return served_model(engine, endpoint.model)


@dataclass
class Hosted:
    replica: Any
    served: ServedModel


class SharedServerProcess:
    """One shared server's life inside a worker: load the base, then loop — heartbeat,
    retire stopped endpoints, load newly attached ones — until stopped, lost or idle."""

    def __init__(self, server: Any, worker: str, conf: InferenceConf, idle_seconds: float):
        self.server, self.worker, self.conf = server, worker, conf
        self.idle_seconds = idle_seconds
        self.engine: Any = None
        self.http: ReplicaServer | None = None
        self.generator: Generator | None = None
        self.hosted: dict[int, Hosted] = {}  # replica pk -> what it serves

    def run(self) -> dict[str, Any]:
        server = self.server
        try:
            with BackgroundHeartbeat(
                lambda: shared_servers.server_heartbeat(server),
                every_seconds=self.conf.heartbeat_seconds,
            ):
                self.engine = build_shared_engine(server, self.conf)
                warm_up(self.engine, ServedModel(None, self.engine.max_context))
            self.generator = Generator(self.engine, None, self.conf)
            self.http = ReplicaServer(self.generator)
            self.http.start()
            if shared_servers.server_ready(server, self.http.url):
                self._serve_until_done()
            self._retire_all()
            shared_servers.finish_server(server)
            return {"server": server.public_id, "status": "stopped"}
        except Exception as exc:
            logger.exception("shared server %s failed", server.public_id)
            error = {"code": "replica_failed", "message": f"{type(exc).__name__}: {exc}"}
            self._retire_all(error)
            shared_servers.finish_server(server, error=error)
            return {"server": server.public_id, "status": "failed"}
        finally:
            if self.http is not None:
                self.http.stop()
            if self.engine is not None:
                self.engine.shutdown()

    def _serve_until_done(self) -> None:
        idle_since = time.monotonic()
        while True:
            close_old_connections()
            if not shared_servers.server_heartbeat(self.server):
                return  # restarted elsewhere or stopped: exit
            self._heartbeat_hosted()
            self._load_pending()
            if self.hosted:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since >= self.idle_seconds:
                if shared_servers.stop_if_idle(self.server):
                    return
            if worker_stopping.wait(self.conf.heartbeat_seconds):
                return

    def _heartbeat_hosted(self) -> None:
        for replica_pk, hosted in list(self.hosted.items()):
            if not services.replica_heartbeat(hosted.replica):
                self._retire(replica_pk)

    def _load_pending(self) -> None:
        assert self.generator is not None and self.http is not None
        for endpoint_pk, generation in shared_servers.pending_endpoints(self.server):
            claimed = services.claim_for_replica(
                endpoint_pk, generation, self.worker, os.getpid(), shared_server=self.server
            )
            if claimed is None:
                continue
            endpoint, replica = claimed
            try:
                with BackgroundHeartbeat(
                    partial(services.replica_heartbeat, replica),
                    partial(shared_servers.server_heartbeat, self.server),
                    every_seconds=self.conf.heartbeat_seconds,
                ):
                    served = attach_endpoint(self.engine, endpoint, self.conf)
                    details = warm_up(self.engine, served)
            except Exception as exc:  # noqa: BLE001 - one bad artifact fails one endpoint
                logger.exception("could not load %s on %s", endpoint.model, self.server.public_id)
                self._forget_adapter(endpoint.model if endpoint.fine_tuned_model_id else None)
                services.finish_replica(
                    replica,
                    error={"code": "replica_failed", "message": f"{type(exc).__name__}: {exc}"},
                )
                continue
            self.generator.serve(served)
            self.hosted[replica.pk] = Hosted(replica, served)
            details.update(
                context_length=served.context_length,
                adapter=served.adapter,
                shared_server=self.server.public_id,
            )
            if not services.mark_ready(replica, self.http.url, details):
                self._retire(replica.pk)  # stopped while loading

    def _retire(self, replica_pk: int, error: dict[str, str] | None = None) -> None:
        hosted = self.hosted.pop(replica_pk)
        assert self.generator is not None
        if self.generator.unserve(hosted.served.adapter):
            self._forget_adapter(hosted.served.adapter)
        services.finish_replica(hosted.replica, error=error)

    def _forget_adapter(self, adapter: str | None) -> None:
        if adapter is not None and self.engine is not None:
            self.engine.unregister_adapter(adapter)

    def _retire_all(self, error: dict[str, str] | None = None) -> None:
        for replica_pk in list(self.hosted):
            self._retire(replica_pk, error)


@app.task(name=tasks.SERVE_SHARED_BASE, bind=True)
def serve_shared_base(self, server_pk: int, generation: int) -> dict[str, Any]:
    """Run the shared server of one base model (holds this worker slot until it stops)."""
    worker = self.request.hostname or "worker"
    server = shared_servers.claim_server(server_pk, generation, worker, os.getpid())
    if server is None:
        return {"server": server_pk, "generation": generation, "skipped": True}
    conf = inference_conf()
    return SharedServerProcess(server, worker, conf, conf.shared_idle_seconds).run()

"""Fine-tuning API under load: requests/s, p50 and p99 for job list, retrieve and create.

Reproduce (PostgreSQL + Redis from scripts/services.sh; gunicorn from the dev extras):
    source scripts/services.sh start && python benchmarks/api_load.py --seconds 10 --threads 8

Setup: a fresh ``<db>_bench`` PostgreSQL database (migrated), one org with raised quotas, a
processed file, 200 existing jobs, and a dedicated training queue (its messages are deleted at
the end, nothing trains). Server: gunicorn, 2 sync WSGI workers. Client: httpx, one
connection-keeping client per thread, each endpoint hammered for a bounded duration.
Baseline measured in the same run, after a 1 s warm-up: ``GET /v1/organization`` (auth, the
org, its effective quotas and current usage), so each endpoint reads as a ratio to it.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parents[1]
REPRODUCE = (
    "source scripts/services.sh start && python benchmarks/api_load.py --seconds {seconds} "
    "--threads {threads}"
)


@dataclass
class Result:
    name: str
    latencies: list[float]
    errors: int
    seconds: float

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


def bench_database_url(url: str) -> str:
    """<db>_bench next to the configured database, created (and migrated) from scratch."""
    import psycopg

    parsed = urlparse(url)
    name = parsed.path.lstrip("/") + "_bench"
    admin = urlunparse(parsed._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunparse(parsed._replace(path="/" + name))


def prepare(env: dict[str, str], existing_jobs: int) -> dict[str, str]:
    """Migrate, then create the org, key, file and jobs (in this process, via the ORM)."""
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True
    )
    os.environ.update(env)
    sys.path[:0] = [str(ROOT / "platform"), str(ROOT)]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "longtune.settings")
    import django

    django.setup()
    from longtune.catalog.models import BaseModel
    from longtune.compute.models import DedicatedCapacity
    from longtune.datasets.models import File, FileStatus
    from longtune.finetuning.models import FineTuningJob
    from longtune.tenancy.models import OrgQuota
    from longtune.tenancy.services.organizations import create_organization_with_owner

    created = create_organization_with_owner(
        email="bench@example.com", password="bench-password-123", org_name="Bench", plan="pro"
    )
    org = created.org
    big = 10**12
    OrgQuota.objects.create(
        org=org,
        max_concurrent_jobs=10**6,
        monthly_training_tokens=big,
        storage_bytes=big,
        requests_per_minute=10**7,
    )
    queue = DedicatedCapacity.objects.create(org=org, queue=f"gpu.{org.slug}.bench").queue
    base = BaseModel.objects.create(
        name="bench-model", location="/nonexistent", original_context_length=4096,
        max_context_length=131072,
    )  # fmt: skip
    file = File.objects.create(
        org=org, filename="train.jsonl", purpose="fine-tune", status=FileStatus.PROCESSED,
        bytes=10_000, scrubbed_bytes=10_000, scrubbed_key="bench/none", num_tokens=2_500,
    )  # fmt: skip
    jobs = [
        FineTuningJob(
            org=org,
            base_model=base,
            model_name=base.name,
            training_file=file,
            training_file_ref=file.public_id,
            status="succeeded",
            context={
                "original_length": 4096,
                "target_length": 32768,
                "rope_method": "yarn",
                "rope_factor": 8.0,
            },
            seed=i,
            trained_tokens=1000,
            hyperparameters={"n_epochs": 1, "batch_size": 1, "learning_rate_multiplier": 1.0},
            lora={"r": 16, "alpha": 32.0, "dropout": 0.05, "target_modules": ["all-linear"]},
        )  # fmt: skip
        for i in range(existing_jobs)
    ]
    for job in jobs:
        job.save()  # PublicIdField fills ids in pre_save (bulk_create would skip it)
    return {
        "secret": created.secret,
        "file": file.public_id,
        "job": jobs[-1].public_id,
        "queue": queue,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_gunicorn(env: dict[str, str], port: int, workers: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "longtune.wsgi:application",
         "--pythonpath", f"{ROOT / 'platform'},{ROOT}", "-w", str(workers),
         "-b", f"127.0.0.1:{port}", "--log-level", "warning"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.terminate()
    raise SystemExit("gunicorn did not start")


def hammer(name, base_url, secret, make_request, seconds: float, threads: int) -> Result:
    import httpx

    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def loop() -> None:
        mine: list[float] = []
        failed = 0
        headers = {"Authorization": f"Bearer {secret}"}
        with httpx.Client(base_url=base_url, headers=headers, timeout=30, trust_env=False) as c:
            while time.monotonic() < stop_at:
                started = time.perf_counter()
                response = make_request(c)
                elapsed = time.perf_counter() - started
                if response.status_code >= 400:
                    failed += 1
                else:
                    mine.append(elapsed)
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return Result(name, latencies, errors[0], time.monotonic() - started)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per endpoint")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--existing-jobs", type=int, default=200)
    args = parser.parse_args(argv)
    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url.startswith(("postgres://", "postgresql://")):
        raise SystemExit("needs PostgreSQL: source scripts/services.sh start")
    env = {**os.environ, "DATABASE_URL": bench_database_url(database_url), "DB_CONN_MAX_AGE": "60"}
    ids = prepare(env, args.existing_jobs)
    port = free_port()
    server = start_gunicorn(env, port, args.workers)
    base_url = f"http://127.0.0.1:{port}"
    body = {"model": "bench-model", "training_file": ids["file"], "context_length": 32768}
    scenarios = [
        ("baseline GET /v1/organization", lambda c: c.get("/v1/organization")),
        ("GET /v1/fine_tuning/jobs?limit=20", lambda c: c.get("/v1/fine_tuning/jobs?limit=20")),
        ("GET /v1/fine_tuning/jobs/{id}", lambda c: c.get(f"/v1/fine_tuning/jobs/{ids['job']}")),
        ("POST /v1/fine_tuning/jobs", lambda c: c.post("/v1/fine_tuning/jobs", json=body)),
    ]
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        hammer("warm-up", base_url, ids["secret"], scenarios[0][1], 1.0, args.threads)
        results = [
            hammer(name, base_url, ids["secret"], request, args.seconds, args.threads)
            for name, request in scenarios
        ]
    finally:
        server.terminate()
        server.wait(30)
        import redis

        redis.Redis.from_url(os.environ["REDIS_URL"]).delete(ids["queue"])
    baseline = results[0]
    print(f"\ngunicorn -w {args.workers} (sync WSGI), PostgreSQL, {args.threads} client threads, "
          f"{args.seconds:g} s per endpoint, {os.cpu_count()} CPU cores shared by server and client\n")  # fmt: skip
    print("| endpoint | requests/s | p50 ms | p99 ms | errors | rps vs baseline |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r.name} | {r.rps:.0f} | {r.percentile(0.50):.1f} | {r.percentile(0.99):.1f} | "
              f"{r.errors} | {r.rps / baseline.rps:.2f} |")  # fmt: skip
    print("\nreproduce: " + REPRODUCE.format(seconds=f"{args.seconds:g}", threads=args.threads))


if __name__ == "__main__":
    main()

"""Dashboard pages: time to first byte on the embedded default with a big org.

Reproduce:
    python benchmarks/dashboard_ttfb.py                # 1,000 jobs, 10,000 events, 200 requests/page
    python benchmarks/dashboard_ttfb.py --quick        # seconds; what the smoke test runs

Setup: a fresh SQLite database under a temporary LONGTUNE_VAR_DIR (the embedded default:
no PostgreSQL, no Redis), migrated; one org whose owner is logged in (a real session cookie),
``--jobs`` fine-tuning jobs, ``--events`` job events (metrics rows, spread over the jobs, a
tenth of them on the job whose page is measured), 100 files, 200 usage rows and a monthly
budget (the billing page). Server: one
uvicorn process, as ``scripts/run.sh`` starts it. Client: httpx, one connection, sequential
requests; TTFB = request sent -> first body byte received. Baseline in the same run:
``GET /v1/organization`` with an API key (auth, org, quotas, usage: the API's cheapest
authenticated page). Target: p95 < 100 ms for every page.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TARGET_P95_MS = 100.0
REPRODUCE = (
    "python benchmarks/dashboard_ttfb.py --jobs {jobs} --events {events} --requests {requests}"
)


def prepare(jobs: int, events: int) -> dict[str, str]:
    """Migrate and fill the org through the ORM (in this process)."""
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, check=True
    )
    sys.path[:0] = [str(ROOT / "platform"), str(ROOT)]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "longtune.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    from longtune.api.ids import new_public_id
    from longtune.catalog.models import BaseModel
    from longtune.datasets.models import File, FileStatus
    from longtune.finetuning.models import EventType, FineTuningJob, JobEvent
    from longtune.inference.models import Endpoint, UsageRecord
    from longtune.tenancy.services.organizations import create_organization_with_owner

    created = create_organization_with_owner(
        email="bench@example.com", password="bench-password-123", org_name="Bench", plan="pro"
    )
    org, user = created.org, created.user
    base = BaseModel.objects.create(
        name="bench-model", location="/nonexistent", original_context_length=4096,
        max_context_length=131072,
    )  # fmt: skip
    files = File.objects.bulk_create(
        File(
            public_id=new_public_id("file-"),
            org=org,
            filename=f"train-{i}.jsonl",
            purpose="fine-tune",
            status=FileStatus.PROCESSED,
            bytes=10_000,
            scrubbed_bytes=10_000,
            scrubbed_key="bench/none",
            num_examples=40,
            num_tokens=2_500,
            report={"valid": True, "pii": {"counts": {"EMAIL": 3}}},
        )  # fmt: skip
        for i in range(100)
    )
    context = {"original_length": 4096, "target_length": 32768, "rope_method": "yarn",
               "rope_factor": 8.0}  # fmt: skip
    job_rows = FineTuningJob.objects.bulk_create(
        FineTuningJob(
            public_id=new_public_id("ftjob-"),
            org=org,
            base_model=base,
            model_name=base.name,
            training_file=files[i % len(files)],
            training_file_ref=files[i % len(files)].public_id,
            status="succeeded",
            context=context,
            seed=i,
            trained_tokens=1000,
            hyperparameters={"n_epochs": 1, "batch_size": 1, "learning_rate_multiplier": 1.0},
            lora={"r": 16, "alpha": 32.0, "dropout": 0.05, "target_modules": ["all-linear"]},
        )  # fmt: skip
        for i in range(jobs)
    )
    measured = job_rows[-1]
    hot = events // 10
    JobEvent.objects.bulk_create(
        (
            JobEvent(
                public_id=new_public_id("ftevent-"),
                org=org,
                job=measured if i < hot else job_rows[i % len(job_rows)],
                type=EventType.METRICS,
                message=f"Step {i}: training loss=1.0",
                data={"step": i, "total_steps": events, "loss": 2.0 / (1 + i)},
            )  # fmt: skip
            for i in range(events)
        ),
        batch_size=2000,
    )
    endpoint = Endpoint.objects.create(
        org=org, model=base.name, base_model=base, context_length=4096, status="stopped"
    )
    UsageRecord.objects.bulk_create(
        UsageRecord(
            org=org,
            endpoint=endpoint,
            endpoint_ref=endpoint.public_id,
            model=base.name,
            kind="chat.completion",
            request_id=f"r{i}",
            prompt_tokens=10,
            completion_tokens=5,
        )  # fmt: skip
        for i in range(200)
    )
    from longtune.billing.models import BillingAccount

    BillingAccount.objects.create(org=org, monthly_budget_cents=10_000)  # a budget to show
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return {
        "cookie": f"{settings.SESSION_COOKIE_NAME}={session.session_key}",
        "secret": created.secret,
        "slug": org.slug,
        "job": measured.public_id,
        "file": files[0].public_id,
    }


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
        time.sleep(0.2)
    raise TimeoutError("uvicorn did not start")


def ttfb(client, url: str, headers: dict[str, str]) -> float:
    start = time.perf_counter()
    with client.stream("GET", url, headers=headers) as response:
        chunks = response.iter_raw()
        next(chunks, None)
        elapsed = time.perf_counter() - start
        assert response.status_code == 200, (url, response.status_code)
        for _ in chunks:  # drain, so the connection is reused
            pass
    return elapsed * 1000


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.events, args.requests = 50, 500, 10

    import logging

    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)

    var_dir = tempfile.mkdtemp(prefix="dashboard-ttfb-")
    for name in ("DATABASE_URL", "REDIS_URL", "S3_BUCKET", "S3_ENDPOINT_URL"):
        os.environ.pop(name, None)  # the embedded default
    os.environ["LONGTUNE_VAR_DIR"] = var_dir
    state = prepare(args.jobs, args.events)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "longtune.asgi:application", "--app-dir", "platform",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT, env=dict(os.environ),
    )  # fmt: skip
    org = f"/o/{state['slug']}/"
    pages = {
        "baseline: GET /v1/organization (API key)": ("/v1/organization", "key"),
        "overview": (org, "session"),
        "jobs list": (org + "jobs/", "session"),
        "job page (1/10 of the events)": (org + f"jobs/{state['job']}", "session"),
        "job loss points (metrics.json)": (org + f"jobs/{state['job']}/metrics.json", "session"),
        "files list": (org + "files/", "session"),
        "file report": (org + f"files/{state['file']}", "session"),
        "usage": (org + "usage/", "session"),
        "audit log": (org + "audit/", "session"),
        "billing (cost, daily chart, budget)": (org + "billing/", "session"),
    }
    rows = []
    try:
        wait_for_port(port)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for name, (path, auth) in pages.items():
                headers = (
                    {"Authorization": f"Bearer {state['secret']}"}
                    if auth == "key"
                    else {"Cookie": state["cookie"]}
                )
                for _ in range(3):
                    ttfb(client, path, headers)  # warm-up
                samples = [ttfb(client, path, headers) for _ in range(args.requests)]
                rows.append((name, percentile(samples, 0.5), percentile(samples, 0.95)))
    finally:
        server.terminate()
        server.wait(20)

    lines = [
        f"# Dashboard time to first byte ({args.jobs} jobs, {args.events} events, embedded default)",
        "",
        f"Reproduce: `{REPRODUCE.format(**vars(args))}`",
        "",
        "| page | p50 ms | p95 ms | p95 < 100 ms |",
        "|---|---|---|---|",
    ]
    for name, p50, p95 in rows:
        verdict = "MET" if p95 < TARGET_P95_MS else "NOT MET"
        lines.append(f"| {name} | {p50:.1f} | {p95:.1f} | {verdict} |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    out = args.output_dir / "dashboard_ttfb.md"
    out.write_text(text)
    return out


if __name__ == "__main__":
    main()

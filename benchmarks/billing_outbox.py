"""Billing outbox throughput and lag: meter events reported per second to a local Stripe-
compatible server, for 100,000 ledger rows, and the outbox's lag under a steady inference load.

Reproduce:
    python benchmarks/billing_outbox.py                    # 100,000 rows, 20 s of steady load
    python benchmarks/billing_outbox.py --quick            # 2,000 rows, 3 s (smoke)
    DATABASE_URL=postgres://... python benchmarks/billing_outbox.py   # on PostgreSQL

Setup: a fresh database (SQLite under a temporary folder unless DATABASE_URL is set), one org,
one endpoint and N ``UsageRecord`` rows (each is two meter events: prompt and completion
tokens); the fake Stripe server of tests/fixtures/fake_stripe runs as a separate process and
the product talks to it over HTTP with the real ``stripe`` client (v2 meter event stream,
batches of ``BILLING_OUTBOX_BATCH_SIZE``). Measured: ``collect()`` (ledger -> outbox rows),
then ``send_pending()`` until the outbox is empty (events/s, checked against the server's
count). Lag: for ``--load-seconds`` a steady ``--rate`` requests/s is written to the ledger
while the outbox task runs back to back; lag = time from a ledger row's insert to its meter
event being accepted by the server. In production the beat period
(``BILLING_OUTBOX_INTERVAL_SECONDS``, 30 s by default) adds to it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER = ROOT / "tests" / "fixtures" / "fake_stripe" / "server.py"
RESULTS = ROOT / "benchmarks" / "results"
API_KEY, SECRET = "sk_test_bench", "whsec_bench"


def start_server() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "--api-key", API_KEY, "--webhook-secret", SECRET],
        stdout=subprocess.PIPE,
        text=True,
    )
    port = int(proc.stdout.readline().split()[-1])
    return proc, f"http://127.0.0.1:{port}"


def setup_django(url: str, var_dir: str) -> None:
    sys.path[:0] = [str(ROOT / "platform"), str(ROOT)]
    os.environ.update(
        LONGTUNE_VAR_DIR=var_dir,
        STRIPE_API_KEY=API_KEY,
        STRIPE_WEBHOOK_SECRET=SECRET,
        STRIPE_API_BASE=url,
        STRIPE_METER_EVENTS_BASE=url,
    )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "longtune.settings")
    import django

    django.setup()
    import logging

    logging.getLogger("stripe").setLevel(logging.WARNING)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def server_event_count(url: str) -> int:
    import json
    import urllib.request

    with urllib.request.urlopen(f"{url}/_fake/state", timeout=30) as response:
        return len(json.loads(response.read())["meter_events"])


def make_rows(org, endpoint, n: int) -> None:
    from longtune.inference.models import UsageRecord

    chunk = 5000
    for start in range(0, n, chunk):
        UsageRecord.objects.bulk_create(
            [
                UsageRecord(
                    org=org,
                    endpoint=endpoint,
                    endpoint_ref=endpoint.public_id,
                    model=endpoint.model,
                    kind="chat.completion",
                    request_id=f"bench-{start + i}",
                    prompt_tokens=100 + i % 50,
                    completion_tokens=20 + i % 7,
                )
                for i in range(min(chunk, n - start))
            ]
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=200.0, help="steady requests/s")
    parser.add_argument("--load-seconds", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.rows, args.load_seconds, args.rate = 2_000, 3.0, 100.0
    proc, url = start_server()
    try:
        with tempfile.TemporaryDirectory() as var_dir:
            setup_django(url, var_dir)
            report = run(args, url)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "billing_outbox.md").write_text(report)
    print(report)


def run(args, url: str) -> str:
    from django.conf import settings
    from django.utils import timezone

    from longtune.billing import outbox
    from longtune.billing.models import MeterEvent
    from longtune.tenancy.services.organizations import create_organization_with_owner
    from tests.finetuning.helpers import make_base_model
    from tests.inference.helpers import make_endpoint

    org = create_organization_with_owner(
        email="bench@example.com", password="correct horse battery staple 42", org_name="Bench"
    ).org
    endpoint = make_endpoint(org, model=make_base_model(), status="ready")
    make_rows(org, endpoint, args.rows)

    t0 = time.perf_counter()
    collected = outbox.collect()
    collect_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    sent = 0
    while True:
        batch = outbox.send_pending(max_batches=1000)
        sent += batch.sent
        if batch.sent == 0 or batch.errors:
            break
    send_s = time.perf_counter() - t0
    at_server = server_event_count(url)
    assert sent == collected == at_server == 2 * args.rows, (sent, collected, at_server)

    # Steady load: insert rate × dt rows, run one outbox tick, measure insert -> sent lag.
    lags: list[float] = []
    inserted_at: dict[str, float] = {}
    start = time.perf_counter()
    last = start
    total_rows = 0
    while time.perf_counter() - start < args.load_seconds:
        now = time.perf_counter()
        due = int((now - start) * args.rate) - total_rows
        if due > 0:
            before = timezone.now()
            make_rows(org, endpoint, due)
            total_rows += due
            inserted_at[before.isoformat()] = now
        outbox.run_outbox()
        done = time.perf_counter()
        for key, t_insert in list(inserted_at.items()):
            pending = MeterEvent.objects.for_org(org).filter(
                sent_at__isnull=True, timestamp__gte=key
            )
            if not pending.exists():
                lags.append(done - t_insert)
                del inserted_at[key]
        last = done
    del last
    p50 = statistics.median(lags) if lags else float("nan")
    worst = max(lags) if lags else float("nan")
    db = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    reproduce = "python benchmarks/billing_outbox.py" + (" --quick" if args.quick else "")
    return (
        "# Billing outbox: meter events to a local Stripe-compatible server\n\n"
        f"Database: {db}; batch size {settings.BILLING_OUTBOX_BATCH_SIZE}; "
        f"{args.rows:,} ledger rows = {2 * args.rows:,} meter events.\n\n"
        "| measure | value |\n|---|---|\n"
        f"| collect (ledger -> outbox) | {collected / collect_s:,.0f} events/s ({collect_s:.1f} s) |\n"
        f"| send (outbox -> server, v2 stream) | {sent / send_s:,.0f} events/s ({send_s:.1f} s) |\n"
        f"| events at the server / ledger rows x 2 | {at_server:,} / {2 * args.rows:,} |\n"
        f"| steady load | {args.rate:.0f} requests/s for {args.load_seconds:.0f} s ({total_rows:,} rows) |\n"
        f"| lag insert -> accepted, p50 | {p50 * 1000:.0f} ms |\n"
        f"| lag insert -> accepted, max | {worst * 1000:.0f} ms |\n\n"
        "Lag excludes the beat period (BILLING_OUTBOX_INTERVAL_SECONDS), which adds to it.\n\n"
        f"Reproduce: `{reproduce}`\n"
    )


if __name__ == "__main__":
    main()

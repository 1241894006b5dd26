"""`longtune` command line: a thin client over the REST API (no Django, no torch).

export LONGTUNE_API_KEY=lt_...            # and LONGTUNE_BASE_URL (default http://127.0.0.1:8000)
longtune files upload train.jsonl         # waits until scrubbed + validated, prints the report
longtune jobs create --model tiny-llama --training-file file-... --context-length 1024
longtune jobs follow ftjob-...            # progress bar + events until the job ends
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

TERMINAL_JOB_STATES = {"succeeded", "failed", "cancelled"}
TERMINAL_FILE_STATES = {"processed", "error", "deleted"}


class ApiClient:
    def __init__(self, base_url: str, api_key: str, timeout: float = 60.0):
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
        )

    def request(self, method: str, path: str, retries: int = 5, **kwargs: Any) -> dict[str, Any]:
        response = self.http.request(method, path, **kwargs)
        if response.status_code == 429 and retries > 0:
            # Over the org's requests-per-minute quota: wait as told, then ask again.
            time.sleep(float(response.headers.get("Retry-After", "1")))
            return self.request(method, path, retries - 1, **kwargs)
        body = response.json() if response.content else {}
        if response.status_code >= 400:
            error = body.get("error", {}) if isinstance(body, dict) else {}
            where = f" (param: {error['param']})" if error.get("param") else ""
            raise SystemExit(
                f"error {response.status_code} {error.get('code', '')}: {error.get('message', body)}{where}"
            )
        return body


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


def files_upload(api: ApiClient, args: argparse.Namespace) -> None:
    path = Path(args.path)
    with path.open("rb") as stream:
        file = api.request(
            "POST", "/v1/files", data={"purpose": args.purpose}, files={"file": (path.name, stream)}
        )
    if args.no_wait:
        _print(file)
        return
    while file["status"] not in TERMINAL_FILE_STATES:
        time.sleep(1.0)
        file = api.request("GET", f"/v1/files/{file['id']}")
    _print(file)
    if file["status"] == "error":
        sys.exit(1)


def jobs_create(api: ApiClient, args: argparse.Namespace) -> None:
    body: dict[str, Any] = {"model": args.model, "training_file": args.training_file}
    hyper = {
        k: v
        for k, v in {
            "n_epochs": args.epochs,
            "batch_size": args.batch_size,
            "learning_rate_multiplier": args.lr_multiplier,
        }.items()
        if v is not None
    }
    if hyper:
        body["method"] = {"type": "supervised", "supervised": {"hyperparameters": hyper}}
    for field in ("validation_file", "suffix", "seed", "context_length"):
        if getattr(args, field) is not None:
            body[field] = getattr(args, field)
    if args.rope_scaling:
        body["rope_scaling"] = {"type": args.rope_scaling}
    if args.full:
        body["full"] = True
    job = api.request("POST", "/v1/fine_tuning/jobs", json=body)
    _print(job)
    if args.follow:
        follow_job(api, job["id"])


def follow_job(api: ApiClient, job_id: str, poll_seconds: float = 3.0) -> dict[str, Any]:
    """Print new events and drive a progress bar until the job reaches a terminal state."""
    from tqdm import tqdm

    seen: set[str] = set()
    bar = tqdm(total=None, unit="step", desc=job_id)
    while True:
        job = api.request("GET", f"/v1/fine_tuning/jobs/{job_id}")
        events = api.request("GET", f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 100})
        for event in reversed(events.get("data", [])):
            if event["id"] not in seen:
                seen.add(event["id"])
                if event.get("type") != "metrics":
                    bar.write(f"[{event['level']}] {event['message']}")
        progress = job.get("progress") or {}
        if progress.get("total_steps"):
            bar.total = progress["total_steps"]
            bar.n = progress.get("step", 0)
            bar.set_postfix(loss=progress.get("loss"), tok_s=progress.get("tokens_per_second"))
            bar.refresh()
        if job["status"] in TERMINAL_JOB_STATES:
            bar.close()
            print(f"{job_id}: {job['status']}  model={job.get('fine_tuned_model')}")
            return job
        time.sleep(poll_seconds)


def build_parser() -> argparse.ArgumentParser:
    # The web tier reaches gpu_runtime only inside functions (its torch-free contract).
    from gpu_runtime.contract import JOB_ROPE_METHODS

    parser = argparse.ArgumentParser(prog="longtune", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--base-url", default=os.environ.get("LONGTUNE_BASE_URL", "http://127.0.0.1:8000")
    )
    parser.add_argument("--api-key", default=os.environ.get("LONGTUNE_API_KEY", ""))
    sub = parser.add_subparsers(dest="resource", required=True)

    files = sub.add_parser("files").add_subparsers(dest="action", required=True)
    upload = files.add_parser("upload")
    upload.add_argument("path")
    upload.add_argument("--purpose", default="fine-tune")
    upload.add_argument("--no-wait", action="store_true")
    upload.set_defaults(func=files_upload)
    files.add_parser("list").set_defaults(
        func=lambda api, a: _print(api.request("GET", "/v1/files"))
    )

    jobs = sub.add_parser("jobs").add_subparsers(dest="action", required=True)
    create = jobs.add_parser("create")
    create.add_argument("--model", required=True)
    create.add_argument("--training-file", required=True)
    create.add_argument("--validation-file")
    create.add_argument("--suffix")
    create.add_argument("--seed", type=int)
    create.add_argument("--context-length", type=int)
    create.add_argument("--rope-scaling", choices=JOB_ROPE_METHODS)  # what the API accepts
    create.add_argument("--epochs", type=int)
    create.add_argument("--batch-size", type=int)
    create.add_argument("--lr-multiplier", type=float)
    create.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    create.add_argument("--follow", action="store_true")
    create.set_defaults(func=jobs_create)
    follow = jobs.add_parser("follow")
    follow.add_argument("job_id")
    follow.set_defaults(func=lambda api, a: follow_job(api, a.job_id))
    jobs.add_parser("list").set_defaults(
        func=lambda api, a: _print(api.request("GET", "/v1/fine_tuning/jobs"))
    )
    cancel = jobs.add_parser("cancel")
    cancel.add_argument("job_id")
    cancel.set_defaults(
        func=lambda api, a: _print(api.request("POST", f"/v1/fine_tuning/jobs/{a.job_id}/cancel"))
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if not args.api_key:
        raise SystemExit("set LONGTUNE_API_KEY or pass --api-key")
    args.func(ApiClient(args.base_url, args.api_key), args)


if __name__ == "__main__":
    main()

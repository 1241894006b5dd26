"""The fake Stripe server as a real process, and settings that turn billing on against it."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.finetuning.conftest import shared_storage, tiny_base_dir  # noqa: F401 - fixtures

SERVER = Path(__file__).resolve().parents[1] / "fixtures" / "fake_stripe" / "server.py"
API_KEY = "sk_test_longtune_fake"
WEBHOOK_SECRET = "whsec_longtune_fake"
PRICE_IDS = {
    "pro": "price_pro_monthly",
    "enterprise": "price_enterprise_monthly",
    "training_tokens": "price_training_tokens",
    "prompt_tokens": "price_prompt_tokens",
    "completion_tokens": "price_completion_tokens",
}


@dataclass
class FakeStripe:
    url: str

    def control(self, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.url}/_fake/{path}", data=data, method="POST" if data is not None else "GET"
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def state(self) -> dict:
        return self.control("state")

    def event(self, type: str, obj: dict, **extra) -> dict:
        """A signed event (payload + Stripe-Signature), made and signed by the server."""
        return self.control("events", {"type": type, "object": obj, **extra})


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    process = subprocess.Popen(
        [
            sys.executable,
            str(SERVER),
            "--port",
            "0",
            "--api-key",
            API_KEY,
            "--webhook-secret",
            WEBHOOK_SECRET,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("listening on "), line
        yield FakeStripe(url=f"http://127.0.0.1:{int(line.split()[-1])}")
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def billing_on(settings, fake_stripe) -> FakeStripe:
    settings.STRIPE_API_KEY = API_KEY
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_API_BASE = fake_stripe.url
    settings.STRIPE_METER_EVENTS_BASE = fake_stripe.url
    settings.STRIPE_PRICE_IDS = dict(PRICE_IDS)
    return fake_stripe

"""Dashboard test helpers: a logged-in browser-like client per role."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.finetuning.conftest import shared_storage, tiny_base_dir  # noqa: F401 - fixtures


def session_client(user, *, enforce_csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=enforce_csrf)
    client.force_login(user)
    return client


@pytest.fixture
def browser():
    """Debian's chromium through Playwright (tests/dashboard/browser.py), skipped without it."""
    from tests.dashboard.browser import CHROMIUM_ARGS, chromium_path

    path = chromium_path()
    if path is None:
        pytest.skip("chromium is not installed (scripts/setup.sh --services installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def owner_client(org_a) -> Client:
    return session_client(org_a.owner)


@pytest.fixture
def org_slug(org_a) -> str:
    return org_a.org.slug

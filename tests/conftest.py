"""Fixtures shared by every test (keep it tidy: one section per concern).

Tenancy: ``make_org`` builds an organization with an owner and hands out API clients for any
role/scope; ``org_a``/``org_b`` are two ready tenants for isolation tests.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pytest

# --- database ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix) -> None:
    """SQLite: a test database FILE instead of Django's shared in-memory one, so tests that
    use several connections (threads racing for a row lock, a worker process) see real
    locking. PostgreSQL (DATABASE_URL) is left alone."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        database.setdefault("TEST", {})["NAME"] = str(settings.VAR_DIR / f"test-{worker}.sqlite3")


# --- speed and hygiene ------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """PBKDF2 with 1M iterations costs ~0.5 s per user on 2 cores; tests do not need it."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _clear_cache():
    """Throttle counters live in the cache; one test's traffic must not throttle the next."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


# --- tenancy ------------------------------------------------------------------------------------

TEST_PASSWORD = "correct horse battery staple 42"


@dataclass
class OrgHandle:
    """An organization with its owner; ``client(role)`` gives an authenticated APIClient."""

    org: object
    owner: object
    owner_secret: str
    _members: dict[str, object] = field(default_factory=dict)

    def member(self, role: str):
        """The user holding ``role`` in this org (created on first use; the owner for "owner")."""
        from longtune.tenancy.models import Membership, User

        if role == "owner":
            return self.owner
        if role not in self._members:
            user = User.objects.create_user(
                email=f"{role}-{self.org.slug}@example.com", password=TEST_PASSWORD
            )
            Membership.objects.create(org=self.org, user=user, role=role)
            self._members[role] = user
        return self._members[role]

    def key(self, role: str = "owner", scopes: Iterable[str] | None = None, **kwargs) -> str:
        """A fresh API key secret for a member with ``role`` (all scopes unless given)."""
        from longtune.tenancy.roles import ALL_SCOPES
        from longtune.tenancy.services.api_keys import issue_api_key

        _, secret = issue_api_key(
            org=self.org,
            created_by=self.member(role),
            role=role,
            scopes=list(scopes) if scopes is not None else list(ALL_SCOPES),
            **kwargs,
        )
        return secret

    def client(self, role: str = "owner", scopes: Iterable[str] | None = None):
        return api_client(self.key(role, scopes))


def api_client(secret: str | None = None):
    from rest_framework.test import APIClient

    client = APIClient()
    if secret:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def openai_client(secret: str, live_server, timeout: float = 120):
    """The official ``openai`` client against the live server, the way a customer's code holds
    it, minus what would make a test lie or hang: no retries (a 5xx must fail the test, not be
    retried into a pass) and no proxy from the environment."""
    import httpx
    import openai

    return openai.OpenAI(
        api_key=secret,
        base_url=f"{live_server.url}/v1",
        max_retries=0,
        http_client=httpx.Client(trust_env=False, timeout=timeout),
    )


def signup_token(outbox, email: str) -> str:
    """The confirmation token from the newest signup mail to ``email`` (tenancy.services.signup)."""
    import re

    for message in reversed(outbox):
        if email in message.to and (found := re.search(r'"token": "([^"]+)"', message.body)):
            return found.group(1)
    raise AssertionError(f"no signup mail with a token to {email}")


def signup_and_confirm(email: str, password: str, organization_name: str) -> dict:
    """The public signup as a client does it: POST /v1/auth/signup (202, a mail), then the
    mailed token to POST /v1/auth/signup/confirm (201: org, owner, first key)."""
    from django.core import mail

    requested = api_client().post(
        "/v1/auth/signup",
        {"email": email, "password": password, "organization_name": organization_name},
        format="json",
    )
    assert requested.status_code == 202, requested.content
    token = signup_token(mail.outbox, email.lower())
    confirmed = api_client().post("/v1/auth/signup/confirm", {"token": token}, format="json")
    assert confirmed.status_code == 201, confirmed.content
    return confirmed.json()


@pytest.fixture
def make_org(db) -> Callable[..., OrgHandle]:
    from longtune.tenancy.services.organizations import create_organization_with_owner

    counter = iter(range(1_000_000))

    def make(name: str = "Acme", plan: str = "free") -> OrgHandle:
        n = next(counter)
        created = create_organization_with_owner(
            email=f"owner{n}-{name.lower().replace(' ', '-')}@example.com",
            password=TEST_PASSWORD,
            org_name=name,
            plan=plan,
        )
        return OrgHandle(org=created.org, owner=created.user, owner_secret=created.secret)

    return make


@pytest.fixture
def org_a(make_org) -> OrgHandle:
    return make_org("Org A")


@pytest.fixture
def org_b(make_org) -> OrgHandle:
    return make_org("Org B")

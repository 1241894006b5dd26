"""No API key secret or invitation token is stored anywhere in the database."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.db import connection

from tests.conftest import TEST_PASSWORD, api_client, signup_and_confirm

pytestmark = pytest.mark.django_db


def every_stored_value() -> list[str]:
    """Every column of every table, read with raw SQL, as text."""
    values = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            quoted = connection.ops.quote_name(table)
            cursor.execute(f"SELECT * FROM {quoted}")  # noqa: S608 - table names from introspection
            for row in cursor.fetchall():
                values.extend(str(value) for value in row if value is not None)
    return values


def test_no_secret_is_stored(org_a):
    secrets = [org_a.owner_secret, org_a.key("admin"), org_a.key("viewer", scopes=["read"])]
    owner = api_client(org_a.owner_secret)
    secrets.append(owner.post("/v1/api_keys", {"name": "ci"}, format="json").json()["secret"])
    invitation = owner.post("/v1/invitations", {"email": "new@example.com"}, format="json").json()
    secrets.append(invitation["token"])
    accepted = (
        api_client()
        .post(
            "/v1/invitations/accept",
            {"token": invitation["token"], "email": "new@example.com", "password": TEST_PASSWORD},
            format="json",
        )
        .json()
    )
    secrets.append(accepted["api_key"]["secret"])
    signup = signup_and_confirm("s@example.com", TEST_PASSWORD, "S")
    secrets.append(signup["api_key"]["secret"])
    out = io.StringIO()
    call_command(
        "create_org",
        email="c@example.com",
        org="C",
        password=TEST_PASSWORD,
        stdout=out,
        stderr=io.StringIO(),
    )
    secrets.append(out.getvalue().strip())

    stored = every_stored_value()
    assert len(stored) > 100  # the scan really read the tables
    for secret in secrets:
        random_part = secret.split("_")[-1]
        assert len(random_part) >= 40
        leaks = [value[:80] for value in stored if random_part in value]
        assert not leaks, f"secret ...{secret[-4:]} found in the database: {leaks}"

"""GET/PUT /v1/pii_policy and the admin form: one validation for both doors."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from longtune.datasets.models import OrgPiiPolicy
from longtune.datasets.pii import ALL_ENTITIES
from longtune.datasets.policies import pii_policy_for
from longtune.tenancy.models import AuditLogEntry

pytestmark = pytest.mark.django_db


def put(client, body):
    return client.put("/v1/pii_policy", body, format="json")


def test_default_policy_scrubs_everything(org_a):
    body = org_a.client("viewer").get("/v1/pii_policy").json()
    assert body["object"] == "pii_policy"
    assert set(body["entities"]) == ALL_ENTITIES == set(body["available_entities"])
    assert body["allow_values"] == [] and body["allow_patterns"] == []
    assert pii_policy_for(org_a.org).entities == ALL_ENTITIES


def test_admin_updates_policy_and_scrubber_sees_it(org_a, org_b):
    body = {
        "entities": ["EMAIL", "PHONE"],
        "allow_values": ["support@acme.com"],
        "allow_patterns": [r".*@acme\.com"],
    }
    response = put(org_a.client("admin"), body)
    assert response.status_code == 200, response.content
    assert response.json()["entities"] == ["EMAIL", "PHONE"]
    assert isinstance(response.json()["updated_at"], int)

    policy = pii_policy_for(org_a.org)
    assert policy.entities == {"EMAIL", "PHONE"}
    assert policy.allow_values == {"support@acme.com"}
    assert policy.allow_patterns == (r".*@acme\.com",)
    assert pii_policy_for(org_b.org).entities == ALL_ENTITIES  # other org untouched
    assert org_b.client().get("/v1/pii_policy").json()["allow_values"] == []
    assert AuditLogEntry.objects.for_org(org_a.org).filter(action="pii_policy.changed").exists()

    # PUT replaces: omitted fields go back to their defaults.
    assert put(org_a.client("owner"), {"allow_values": []}).json()["entities"] == sorted(
        ALL_ENTITIES
    )


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"entities": ["EMAIL", "SHOE_SIZE"]}, "invalid_choice", "entities.1"),
        ({"allow_patterns": ["ok", "(unclosed"]}, "invalid_regex", "allow_patterns.1"),
        ({"allow_values": ["   "]}, "blank", "allow_values.0"),
        ({"allow_values": "not-a-list"}, "not_a_list", "allow_values"),
        ({"allow_patterns": ["a" * 500]}, "max_length", "allow_patterns.0"),
        ({"allow_patterns": ["x"] * 50}, "max_length", "allow_patterns"),
        ({"entity": ["EMAIL"]}, "unknown_field", "entity"),
    ],
)
def test_invalid_policies_are_400_with_param(org_a, body, code, param):
    response = put(org_a.client("admin"), body)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param), error
    assert not OrgPiiPolicy.objects.for_org(org_a.org).exists()


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_only_admins_change_the_policy(org_a, role):
    response = put(org_a.client(role), {"entities": ["EMAIL"]})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "insufficient_role"


def test_admin_form_validation_refuses_bad_regex_and_entities(org_a):
    row = OrgPiiPolicy(org=org_a.org, entities=["EMAIL"], allow_patterns=["(bad"])
    with pytest.raises(ValidationError) as bad_regex:
        row.full_clean()
    assert bad_regex.value.message_dict["allow_patterns"][0].startswith("item 1: Invalid regular")
    row = OrgPiiPolicy(org=org_a.org, entities=["NOPE"])
    with pytest.raises(ValidationError) as bad_entity:
        row.full_clean()
    assert "entities" in bad_entity.value.message_dict


def test_admin_change_form_saves_a_policy(org_a, admin_client):
    response = admin_client.post(
        "/admin/lt_datasets/orgpiipolicy/add/",
        {
            "org": org_a.org.pk,
            "entities": '["EMAIL"]',
            "allow_values": "[]",
            "allow_patterns": '["(bad"]',
        },
    )
    assert response.status_code == 200  # re-rendered with the error
    assert b"Invalid regular expression" in response.content
    assert not OrgPiiPolicy.objects.for_org(org_a.org).exists()
    response = admin_client.post(
        "/admin/lt_datasets/orgpiipolicy/add/",
        {
            "org": org_a.org.pk,
            "entities": '["EMAIL"]',
            "allow_values": '["ceo@acme.com"]',
            "allow_patterns": "[]",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    assert pii_policy_for(org_a.org).allow_values == {"ceo@acme.com"}

"""The fake Stripe's parameter checks and where they come from: ``make_spec_excerpt.py`` turns
an operation of Stripe's OpenAPI description (``spec3.sdk.json``: form or JSON request body,
query parameters, ``$ref``s, ``anyOf`` with the ``""`` that unsets a field) into the schema the
fake server validates with; the committed excerpt covers every operation the product calls."""

from __future__ import annotations

from tests.fixtures.fake_stripe import make_spec_excerpt as maker
from tests.fixtures.fake_stripe import server

# A fragment in spec3.sdk.json's shape (keys as Stripe writes them; trimmed to a few fields).
SPEC = {
    "paths": {
        "/v1/billing_portal/sessions": {
            "post": {
                "requestBody": {
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "encoding": {"expand": {"explode": True, "style": "deepObject"}},
                            "schema": {
                                "additionalProperties": False,
                                "type": "object",
                                "required": ["customer"],
                                "properties": {
                                    "customer": {"maxLength": 5000, "type": "string"},
                                    "expand": {
                                        "type": "array",
                                        "items": {"maxLength": 5000, "type": "string"},
                                    },
                                    "locale": {"type": "string", "enum": ["auto", "en", "fr"]},
                                    "return_url": {"type": "string"},
                                    "flow_data": {"$ref": "#/components/schemas/flow_data"},
                                    "metadata": {
                                        "anyOf": [
                                            {
                                                "type": "object",
                                                "additionalProperties": {"type": "string"},
                                            },
                                            {"type": "string", "enum": [""]},
                                        ]
                                    },
                                },
                            },
                        }
                    }
                }
            }
        },
        "/v1/invoices": {
            "get": {
                "parameters": [
                    {"in": "query", "name": "customer", "required": False,
                     "schema": {"maxLength": 5000, "type": "string"}, "style": "form"},
                    {"in": "query", "name": "limit", "required": False,
                     "schema": {"type": "integer"}, "style": "form"},
                ]
            }
        },
        "/v2/billing/meter_event_stream": {
            "post": {
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["events"],
                                "properties": {
                                    "events": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["event_name", "payload"],
                                            "properties": {
                                                "event_name": {"type": "string"},
                                                "identifier": {"type": "string"},
                                                "payload": {
                                                    "type": "object",
                                                    "additionalProperties": {"type": "string"},
                                                },
                                                "timestamp": {
                                                    "type": "string",
                                                    "format": "date-time",
                                                },
                                            },
                                        },
                                    }
                                },
                            }
                        }
                    }
                }
            }
        },
    },
    "components": {
        "schemas": {
            "flow_data": {
                "type": "object",
                "required": ["type"],
                "properties": {"type": {"type": "string", "enum": ["payment_method_update"]}},
            }
        }
    },
}  # fmt: skip


def refused(schema: dict, value: dict, *, form: bool = True) -> tuple[str, str] | None:
    try:
        server.validate(value, schema, "", form)
    except server.ParamError as error:
        return error.code, error.param
    return None


def test_a_form_body_with_refs_enums_and_unset_metadata():
    params = maker.operation_params(SPEC, "post", "/v1/billing_portal/sessions")
    assert params["required"] == ["customer"]
    assert params["properties"]["flow_data"] == {
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"type": "string", "enum": ["payment_method_update"]}},
    }
    assert params["properties"]["metadata"] == {"type": "object", "additionalProperties": True}
    assert refused(params, {"customer": "cus_1", "return_url": "http://x"}) is None
    assert refused(params, {"return_url": "http://x"}) == ("parameter_missing", "customer")
    assert refused(params, {"customer": "c", "colour": "red"}) == ("parameter_unknown", "colour")
    assert refused(params, {"customer": "c", "locale": "xx"}) == ("parameter_invalid", "locale")
    assert refused(params, {"customer": "c", "flow_data": {}}) == (
        "parameter_missing",
        "flow_data[type]",
    )


def test_query_parameters_of_a_list_and_a_json_body_of_v2():
    query = maker.operation_params(SPEC, "get", "/v1/invoices")
    assert query == {
        "type": "object",
        "required": [],
        "properties": {"customer": {"type": "string"}, "limit": {"type": "integer"}},
    }
    assert refused(query, {"customer": "cus_1", "limit": "20"}) is None
    assert refused(query, {"limit": "many"}) == ("parameter_invalid", "limit")

    stream = maker.operation_params(SPEC, "post", "/v2/billing/meter_event_stream")
    event = {"event_name": "e", "payload": {"value": "1", "stripe_customer_id": "cus_1"}}
    assert refused(stream, {"events": [event]}, form=False) is None
    assert refused(stream, {"events": [{"payload": {}}]}, form=False) == (
        "parameter_missing",
        "events[0][event_name]",
    )


def test_the_committed_excerpt_covers_every_operation_the_product_calls():
    expected = {f"{method.upper()} {path}" for method, path, *_ in maker.OPERATIONS}
    assert set(server.SPEC) == expected
    for name, operation in server.SPEC.items():
        assert operation["base"] in ("api", "meter_events"), name
        assert operation["params"]["type"] == "object", name
    stream = server.SPEC["POST /v2/billing/meter_event_stream"]["params"]
    assert stream["required"] == ["events"]
    assert stream["properties"]["events"]["items"]["required"] == ["event_name", "payload"]


def test_the_committed_portal_operation_is_strict():
    """customer is optional since customer_account exists; flow_data still needs its type."""
    params = server.SPEC["POST /v1/billing_portal/sessions"]["params"]
    assert {"customer", "customer_account", "return_url", "flow_data"} <= set(params["properties"])
    body = {"customer": "cus_1", "return_url": "http://localhost/billing"}
    assert refused(params, body) is None
    assert refused(params, {**body, "flow_data": {}}) == ("parameter_missing", "flow_data[type]")
    assert refused(params, {**body, "not_a_stripe_param": "1"}) == (
        "parameter_unknown",
        "not_a_stripe_param",
    )

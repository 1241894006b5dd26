"""The OpenAI-compatible gateway against a REAL replica (the worker's HTTP server wrapping an
InferenceEngine on the tiny model) running in this process: shapes, SSE, metering, coded 4xx.

The Celery-driven lifecycle and the official openai client are in test_serving_e2e.py.
"""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient

from longtune.inference.models import UsageRecord
from longtune.tenancy.models import OrgQuota
from tests.conftest import api_client
from tests.finetuning.conftest import TINY_ORIGINAL_CONTEXT
from tests.finetuning.helpers import make_base_model
from tests.inference.helpers import local_replica, make_endpoint

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def served(make_org, tiny_base_dir):
    """(org handle, inference client, endpoint) with a real replica serving the tiny base."""
    handle = make_org("Gateway", plan="pro")
    OrgQuota.objects.create(org=handle.org, requests_per_minute=100_000)
    base = make_base_model("tiny-gw", tiny_base_dir, original=TINY_ORIGINAL_CONTEXT, maximum=256)
    endpoint = make_endpoint(handle.org, model=base)
    with local_replica(endpoint, tiny_base_dir):
        yield handle, api_client(handle.key("member", scopes=["inference"])), endpoint


def sse_events(response) -> list[str]:
    body = b"".join(response.streaming_content).decode()
    assert body.endswith("\n\n")
    frames = body.split("\n\n")[:-1]
    assert all(frame.startswith("data: ") for frame in frames), frames
    return [frame.removeprefix("data: ") for frame in frames]


def test_chat_completion_shape_and_usage_row(served):
    handle, client, endpoint = served
    response = client.post(
        CHAT, {"model": "tiny-gw", "messages": HELLO, "max_tokens": 6, "temperature": 0},
        format="json",
    )  # fmt: skip
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == "tiny-gw"
    (choice,) = body["choices"]
    assert choice["message"]["role"] == "assistant" and isinstance(
        choice["message"]["content"], str
    )
    assert choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert usage["prompt_tokens"] > 2 and 1 <= usage["completion_tokens"] <= 6
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]

    row = UsageRecord.objects.for_org(handle.org).get()
    assert (row.prompt_tokens, row.completion_tokens) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    assert row.request_id == body["id"] and row.endpoint_id == endpoint.pk and not row.stream
    assert row.ttft_ms is not None and row.ttft_ms > 0

    # Greedy decoding is deterministic: the same request gives the same text.
    again = client.post(
        CHAT, {"model": "tiny-gw", "messages": HELLO, "max_tokens": 6, "temperature": 0},
        format="json",
    ).json()  # fmt: skip
    assert again["choices"][0]["message"]["content"] == choice["message"]["content"]

    # The endpoint page shows recent averages; the ledger lists and aggregates.
    owner = handle.client("owner")
    stats = owner.get(f"/v1/endpoints/{endpoint.public_id}").json()["stats"]
    assert stats["requests"] == 2 and stats["avg_ttft_ms"] > 0
    listed = owner.get("/v1/usage").json()["data"]
    assert {r["request_id"] for r in listed} == {body["id"], again["id"]}
    (bucket,) = owner.get("/v1/usage?group_by=model,day").json()["data"]
    assert bucket["model"] == "tiny-gw" and bucket["requests"] == 2
    assert bucket["prompt_tokens"] == 2 * usage["prompt_tokens"]


def test_chat_streaming_sse_ends_with_done_and_meters(served):
    handle, client, _ = served
    response = client.post(
        CHAT,
        {"model": "tiny-gw", "messages": HELLO, "max_tokens": 8, "temperature": 0,
         "stream": True, "stream_options": {"include_usage": True}},
        format="json",
    )  # fmt: skip
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    *content, final, usage_chunk = chunks
    assert final["choices"][0]["finish_reason"] in ("stop", "length")
    assert usage_chunk["choices"] == []
    usage = usage_chunk["usage"]
    row = UsageRecord.objects.for_org(handle.org).get()
    assert row.stream and row.completion_tokens == usage["completion_tokens"] >= 1
    assert row.prompt_tokens == usage["prompt_tokens"]

    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in content)
    plain = client.post(
        CHAT, {"model": "tiny-gw", "messages": HELLO, "max_tokens": 8, "temperature": 0},
        format="json",
    ).json()  # fmt: skip
    assert streamed == plain["choices"][0]["message"]["content"]


def test_streaming_under_asgi_is_an_async_iterator(served):
    """Under ASGI the SSE body is the async generator itself (no thread held per stream)."""
    handle, _, _ = served
    client = AsyncClient()
    auth = {"Authorization": f"Bearer {handle.key('member', scopes=['inference'])}"}

    async def stream() -> tuple[bool, list[bytes]]:
        response = await client.post(
            CHAT,
            {"model": "tiny-gw", "messages": HELLO, "max_tokens": 5, "stream": True},
            content_type="application/json",
            headers=auth,
        )
        assert response.status_code == 200, response.content
        return response.is_async, [chunk async for chunk in response.streaming_content]

    is_async, chunks = async_to_sync(stream)()
    assert is_async
    frames = b"".join(chunks).decode().split("\n\n")[:-1]
    assert frames[-1] == "data: [DONE]" and len(frames) >= 3
    completion_tokens = UsageRecord.objects.for_org(handle.org).get().completion_tokens
    content_frames = [json.loads(f.removeprefix("data: ")) for f in frames[:-2]]
    assert 1 <= completion_tokens <= 5 and len(content_frames) <= completion_tokens


def test_abandoned_stream_is_metered_with_the_tokens_sent(served):
    """A client that leaves after the first chunk is billed for what it was sent, not 0."""
    from longtune.inference import gateway
    from longtune.inference.services import route_for

    handle, _, _ = served
    route = route_for(handle.org, "tiny-gw")
    sampling = {"temperature": 0.0, "top_p": 1.0, "max_tokens": 40}
    call = gateway.GatewayCall(
        kind=gateway.CHAT,
        org=handle.org,
        api_key=None,
        route=route,
        body=gateway.replica_request(messages=HELLO, prompt=None, data=sampling, route=route),
        stream=True,
        include_usage=False,
    )

    async def first_chunk_then_leave() -> bytes:
        upstream = gateway.Upstream(call)
        await upstream.open()
        stream = gateway.sse_stream(call, upstream)
        first = await stream.__anext__()
        await stream.aclose()
        return first

    assert async_to_sync(first_chunk_then_leave)().startswith(b"data: {")
    row = UsageRecord.objects.for_org(handle.org).get()
    assert row.stream and row.prompt_tokens > 2
    assert 1 <= row.completion_tokens < 40 and row.ttft_ms is None


def test_text_completion_stream_and_plain(served):
    _, client, _ = served
    plain = client.post(
        COMPLETIONS, {"model": "tiny-gw", "prompt": "the model", "max_tokens": 4, "temperature": 0},
        format="json",
    )  # fmt: skip
    assert plain.status_code == 200, plain.content
    assert plain.json()["object"] == "text_completion"
    streamed = client.post(
        COMPLETIONS,
        {"model": "tiny-gw", "prompt": "the model", "max_tokens": 4, "temperature": 0,
         "stream": True},
        format="json",
    )  # fmt: skip
    events = sse_events(streamed)
    assert events[-1] == "[DONE]"
    text = "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1])
    assert text == plain.json()["choices"][0]["text"]


def test_prompt_longer_than_context_is_400(served):
    handle, client, _ = served
    long_prompt = "the model " * 200  # far more than the tiny base's 64-token context
    for path, body in [
        (CHAT, {"messages": [{"role": "user", "content": long_prompt}]}),
        (COMPLETIONS, {"prompt": long_prompt}),
        (CHAT, {"messages": HELLO, "stream": True}),  # streamed: the status is still 400
    ]:
        if body.get("stream"):
            body["messages"] = [{"role": "user", "content": long_prompt}]
        response = client.post(path, {"model": "tiny-gw", **body}, format="json")
        assert response.status_code == 400, (path, response.content)
        error = response.json()["error"]
        assert error["code"] == "context_length_exceeded"
        assert error["param"] in ("messages", "prompt")
    assert not UsageRecord.objects.for_org(handle.org).exists()


BAD_BODIES = [
    ({"messages": HELLO}, "model", "required"),
    ({"model": "tiny-gw"}, "messages", "required"),
    ({"model": "tiny-gw", "messages": []}, "messages", "empty"),
    ({"model": "tiny-gw", "messages": "hi"}, "messages", "not_a_list"),
    ({"model": "tiny-gw", "messages": [{"role": "robot", "content": "x"}]}, "messages.0.role",
     "invalid_choice"),
    ({"model": "tiny-gw", "messages": [{"role": "user", "content": 5}]}, "messages.0.content",
     "invalid"),
    ({"model": "tiny-gw", "messages": HELLO, "max_tokens": 0}, "max_tokens", "min_value"),
    # One code for every "does not fit the context" (was a second one, max_tokens_too_large).
    ({"model": "tiny-gw", "messages": HELLO, "max_tokens": 64}, "max_tokens",
     "context_length_exceeded"),
    ({"model": "tiny-gw", "messages": HELLO, "temperature": 2.5}, "temperature", "max_value"),
    ({"model": "tiny-gw", "messages": HELLO, "temperature": "hot"}, "temperature", "invalid"),
    ({"model": "tiny-gw", "messages": HELLO, "top_p": 0}, "top_p", "invalid"),
    ({"model": "tiny-gw", "messages": HELLO, "n": 2}, "n", "max_value"),
    ({"model": "tiny-gw", "messages": HELLO, "stop": ["a", "b", "c", "d", "e"]}, "stop",
     "invalid"),
    ({"model": "tiny-gw", "messages": HELLO, "stream_options": {"include_usage": "y"}},
     "stream_options", "invalid"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "param", "code"), BAD_BODIES)
def test_bad_chat_inputs_are_coded_400s(served, body, param, code):
    _, client, _ = served
    response = client.post(CHAT, body, format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, code)


def test_completion_bad_inputs(served):
    _, client, _ = served
    for body, param in [
        ({"model": "tiny-gw"}, "prompt"),
        ({"model": "tiny-gw", "prompt": ""}, "prompt"),
        ({"model": "tiny-gw", "prompt": ["a", "b"]}, "prompt"),
        ({"model": "tiny-gw", "prompt": "x", "echo": True}, "echo"),
    ]:
        response = client.post(COMPLETIONS, body, format="json")
        assert response.status_code == 400, (body, response.content)
        assert response.json()["error"]["param"] == param
    assert client.post(COMPLETIONS, b"{", content_type="application/json").status_code == 400
    assert client.post(COMPLETIONS, [1], format="json").json()["error"]["code"] == "invalid_body"


def test_model_resolution_errors(served, make_org):
    handle, client, endpoint = served
    unknown = client.post(CHAT, {"model": "nope", "messages": HELLO}, format="json")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "model_not_found")

    make_base_model("tiny-undeployed", "/nonexistent", original=64, maximum=256)
    idle = client.post(CHAT, {"model": "tiny-undeployed", "messages": HELLO}, format="json")
    assert (idle.status_code, idle.json()["error"]["code"]) == (404, "model_not_deployed")

    # Another org may call the public base, but has no endpoint of its own for it.
    other = make_org("Other GW")
    response = api_client(other.key("member", scopes=["inference"])).post(
        CHAT, {"model": "tiny-gw", "messages": HELLO}, format="json"
    )
    assert (response.status_code, response.json()["error"]["code"]) == (404, "model_not_deployed")

    pending = make_endpoint(handle.org, model=make_base_model("tiny-pending", "/x", original=64))
    assert pending.status == "pending"
    response = client.post(CHAT, {"model": "tiny-pending", "messages": HELLO}, format="json")
    assert response.status_code == 503 and response["Retry-After"] == "5"
    assert response.json()["error"]["code"] == "endpoint_not_ready"


def test_scope_and_role_are_enforced(served):
    handle, _, _ = served
    body = {"model": "tiny-gw", "messages": HELLO, "max_tokens": 2}
    no_scope = handle.client("owner", scopes=["read", "write"]).post(CHAT, body, format="json")
    assert no_scope.status_code == 403
    assert no_scope.json()["error"]["code"] == "insufficient_scope"
    viewer = handle.client("viewer", scopes=["inference"]).post(CHAT, body, format="json")
    assert (viewer.status_code, viewer.json()["error"]["code"]) == (403, "insufficient_role")
    anonymous = api_client(None).post(CHAT, body, format="json")
    assert anonymous.status_code == 401
    assert handle.client("owner").get(CHAT).status_code == 405


def test_rate_limit_applies_to_the_gateway(served):
    handle, client, _ = served
    OrgQuota.objects.unscoped_across_orgs().filter(org=handle.org).update(requests_per_minute=1)
    body = {"model": "nope", "messages": HELLO}
    assert client.post(CHAT, body, format="json").status_code == 404
    limited = client.post(CHAT, body, format="json")
    assert limited.status_code == 429 and "Retry-After" in limited
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"

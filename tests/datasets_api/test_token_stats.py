"""Token counts with a real base-model tokenizer: the scrub report and GET /v1/files/{id}/token_stats.

The tiny model directory (gpu_runtime.tiny) is a real Llama-style model with a real BPE
tokenizer.json; expected numbers are recomputed here independently from the scrubbed bytes
downloaded through the API, with tokenizers.Tokenizer directly.
"""

from __future__ import annotations

import json
import math

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from tokenizers import Tokenizer

from longtune.catalog.models import BaseModel
from longtune.datasets.models import File, FileStatus
from longtune.storage import get_storage
from tests.datasets_api.files_helpers import (
    good_upload,
    s3_files,  # noqa: F401  (fixture, used through pytestmark)
)
from workers.datasets import process_file

pytestmark = [pytest.mark.integration, pytest.mark.django_db, pytest.mark.usefixtures("s3_files")]

TINY = "tiny-llama"


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from gpu_runtime.tiny import build_tiny_model_dir

    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny-llama"), max_position_embeddings=64)


@pytest.fixture
def tiny_tokenizer(tiny_model_dir) -> Tokenizer:
    return Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))


def register(name: str, location: str, *, max_context: int = 256) -> BaseModel:
    return BaseModel.objects.create(
        name=name, location=location, original_context_length=64, max_context_length=max_context
    )


@pytest.fixture
def tiny_base(tiny_model_dir) -> BaseModel:
    return register(TINY, str(tiny_model_dir))


def upload_and_process(org_handle, data: bytes) -> tuple[object, File]:
    client = org_handle.client("member")
    response = client.post(
        "/v1/files",
        {"file": SimpleUploadedFile("train.jsonl", data), "purpose": "fine-tune"},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    file = File.objects.for_org(org_handle.org).get(public_id=response.json()["id"])
    process_file(file.pk)
    file.refresh_from_db()
    assert file.status == FileStatus.PROCESSED, file.error
    return client, file


def scrubbed_texts(client, file_id: str) -> list[str]:
    """Chat examples' trainable text, from the scrubbed bytes the API serves."""
    content = b"".join(client.get(f"/v1/files/{file_id}/content").streaming_content)
    rows = [json.loads(line) for line in content.splitlines() if line.strip()]
    return ["\n".join(m["content"] for m in row["messages"]) for row in rows]


def power_of_two_histogram(lengths: list[int]) -> dict[str, int]:
    buckets: dict[int, int] = {}
    for n in lengths:
        bound = 1
        while bound < n:
            bound *= 2
        buckets[bound] = buckets.get(bound, 0) + 1
    return {f"<={k}": v for k, v in sorted(buckets.items())}


def assert_error(response, status: int, code: str, param: str | None) -> None:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param), error
    assert error["message"]


# --- the scrub report ------------------------------------------------------------------------


def test_scrub_report_counts_with_the_default_base_models_tokenizer(
    org_a, tiny_base, tiny_tokenizer
):
    client, file = upload_and_process(org_a, good_upload())
    lengths = [len(tiny_tokenizer.encode(t).ids) for t in scrubbed_texts(client, file.public_id)]

    stats = file.report["token_stats"]
    assert stats["tokenizer"] == TINY
    assert TINY in stats["method"] and not stats["method"].startswith("estimate")
    assert stats["tokens"] == file.num_tokens == sum(lengths)
    assert stats["examples"] == len(lengths) == 12
    assert stats["max_tokens"] == max(lengths)
    assert stats["histogram"] == power_of_two_histogram(lengths)
    # A real tokenizer, not the bytes/4 estimate dressed up.
    estimate = sum(math.ceil(len(t.encode()) / 4) for t in scrubbed_texts(client, file.public_id))
    assert stats["tokens"] != estimate


def test_scrub_report_falls_back_to_the_estimate_without_a_tokenizer(org_a, tmp_path):
    register("no-tokenizer", str(tmp_path))  # a directory without tokenizer.json
    client, file = upload_and_process(org_a, good_upload())
    texts = scrubbed_texts(client, file.public_id)

    stats = file.report["token_stats"]
    assert stats["tokenizer"] == "estimate: bytes/4"
    assert stats["method"].startswith("estimate")
    assert stats["tokens"] == sum(math.ceil(len(t.encode()) / 4) for t in texts)


def test_scrub_counts_with_a_tokenizer_stored_on_s3(
    org_a, tiny_model_dir, tiny_tokenizer, settings, tmp_path
):
    settings.MODELS_DIR = str(tmp_path / "models-cache")
    storage = get_storage()
    storage.put_bytes(
        "registry/tiny/tokenizer.json", (tiny_model_dir / "tokenizer.json").read_bytes()
    )
    register("tiny-on-s3", f"s3://{settings.S3_BUCKET}/registry/tiny")

    client, file = upload_and_process(org_a, good_upload())
    lengths = [len(tiny_tokenizer.encode(t).ids) for t in scrubbed_texts(client, file.public_id)]
    assert file.report["token_stats"]["tokenizer"] == "tiny-on-s3"
    assert file.num_tokens == sum(lengths)


# --- GET /v1/files/{id}/token_stats ----------------------------------------------------------


def test_token_stats_equal_an_independent_computation(org_a, tiny_base, tiny_tokenizer):
    client, file = upload_and_process(org_a, good_upload())
    lengths = [len(tiny_tokenizer.encode(t).ids) for t in scrubbed_texts(client, file.public_id)]
    context, epochs = 16, 3
    assert max(lengths) > context  # the truncation below is exercised

    response = client.get(
        f"/v1/files/{file.public_id}/token_stats",
        {"model": TINY, "context_length": context, "n_epochs": epochs},
    )
    assert response.status_code == 200, response.content
    body = response.json()
    per_epoch = sum(min(n, context) for n in lengths)
    assert body["tokenizer"] == body["model"] == TINY
    assert (body["examples"], body["tokens"]) == (len(lengths), sum(lengths))
    assert body["histogram"] == power_of_two_histogram(lengths)
    assert body["estimated_training_tokens"] == per_epoch * epochs
    assert body["packed_sequences"] == math.ceil(per_epoch / context)
    assert (body["context_length"], body["n_epochs"]) == (context, epochs)


def test_token_stats_default_to_the_default_model_and_its_context(org_a, tiny_base, tiny_tokenizer):
    client, file = upload_and_process(org_a, good_upload())
    lengths = [len(tiny_tokenizer.encode(t).ids) for t in scrubbed_texts(client, file.public_id)]

    body = client.get(f"/v1/files/{file.public_id}/token_stats").json()
    assert (body["model"], body["context_length"], body["n_epochs"]) == (TINY, 64, 1)
    assert body["tokens"] == sum(lengths) == file.num_tokens
    assert body["estimated_training_tokens"] == sum(min(n, 64) for n in lengths)


def test_another_model_counts_with_its_own_tokenizer(org_a, tiny_base, tmp_path, tiny_tokenizer):
    from gpu_runtime.tiny import build_tiny_model_dir

    other_dir = build_tiny_model_dir(tmp_path / "other", seed=1, vocab_size=300)
    register("tiny-other", str(other_dir))
    other = Tokenizer.from_file(str(other_dir / "tokenizer.json"))
    client, file = upload_and_process(org_a, good_upload())
    texts = scrubbed_texts(client, file.public_id)

    body = client.get(f"/v1/files/{file.public_id}/token_stats", {"model": "tiny-other"}).json()
    assert body["tokenizer"] == "tiny-other"
    assert body["tokens"] == sum(len(other.encode(t).ids) for t in texts)
    assert body["tokens"] != sum(len(tiny_tokenizer.encode(t).ids) for t in texts)


@pytest.mark.parametrize(
    ("params", "status", "code", "param"),
    [
        ({"model": "no-such-model"}, 404, "model_not_found", "model"),
        ({"model": "ft:tiny-llama:other-org::x"}, 404, "model_not_found", "model"),
        ({"context_length": "abc"}, 400, "invalid_value", "context_length"),
        ({"context_length": "0"}, 400, "invalid_value", "context_length"),
        ({"context_length": "257"}, 400, "invalid_value", "context_length"),  # > max 256
        ({"n_epochs": "-1"}, 400, "invalid_value", "n_epochs"),
        ({"n_epochs": "1.5"}, 400, "invalid_value", "n_epochs"),
    ],
)
def test_bad_requests_are_coded(org_a, tiny_base, params, status, code, param):
    client, file = upload_and_process(org_a, good_upload())
    response = client.get(f"/v1/files/{file.public_id}/token_stats", params)
    assert_error(response, status, code, param)


def test_a_private_model_of_another_org_is_not_found(org_a, org_b, tiny_model_dir):
    BaseModel.objects.create(
        name="b-private",
        location=str(tiny_model_dir),
        original_context_length=64,
        max_context_length=64,
        is_public=False,
        org=org_b.org,
    )
    client, file = upload_and_process(org_a, good_upload())
    response = client.get(f"/v1/files/{file.public_id}/token_stats", {"model": "b-private"})
    assert_error(response, 404, "model_not_found", "model")


def test_unprocessed_file_is_409_and_too_big_file_is_413(org_a, tiny_base, settings):
    client = org_a.client("member")
    response = client.post(
        "/v1/files",
        {"file": SimpleUploadedFile("t.jsonl", good_upload()), "purpose": "fine-tune"},
        format="multipart",
    )
    file_id = response.json()["id"]
    assert_error(client.get(f"/v1/files/{file_id}/token_stats"), 409, "file_not_processed", "id")

    process_file(File.objects.for_org(org_a.org).get(public_id=file_id).pk)
    settings.TOKEN_STATS_MAX_BYTES = 100
    response = client.get(f"/v1/files/{file_id}/token_stats")
    assert_error(response, 413, "file_too_large_for_token_stats", "id")


def test_another_orgs_file_is_404(org_a, org_b, tiny_base):
    _, file = upload_and_process(org_a, good_upload())
    response = org_b.client().get(f"/v1/files/{file.public_id}/token_stats", {"model": TINY})
    assert_error(response, 404, "not_found", None)

"""The object-storage interface: same behaviour on the local folder and on a real S3 server."""

from __future__ import annotations

import io
import os

import pytest

from longtune.storage import LocalObjectStorage, ObjectNotFound, org_prefix


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path):
    if request.param == "local":
        return LocalObjectStorage(tmp_path / "objects")
    request.applymarker(pytest.mark.integration)
    return request.getfixturevalue("s3_storage")


def test_put_open_size_delete_roundtrip(storage):
    key = org_prefix("org_a") + "files/file-1/raw.jsonl"
    assert not storage.exists(key)
    assert storage.put(key, io.BytesIO(b'{"text": "hi"}\n')) == 15
    assert storage.exists(key)
    assert storage.size(key) == 15
    with storage.open(key) as stream:
        assert stream.read() == b'{"text": "hi"}\n'
    storage.delete(key)
    assert not storage.exists(key)
    with pytest.raises(ObjectNotFound):
        storage.size(key)


def test_large_object_streams_in_multiple_parts(storage):
    """20 MiB goes through the multipart path on S3 and comes back byte-identical."""
    payload = os.urandom(1024 * 1024) * 20
    storage.put("orgs/org_a/big.bin", io.BytesIO(payload))
    with storage.open("orgs/org_a/big.bin") as stream:
        got = b"".join(iter(lambda: stream.read(1 << 20), b""))
    assert got == payload


def test_list_and_delete_prefix_stay_inside_the_org(storage):
    storage.put_bytes("orgs/org_a/x/1", b"1")
    storage.put_bytes("orgs/org_a/x/2", b"22")
    storage.put_bytes("orgs/org_b/x/1", b"333")
    assert [(i.key, i.size) for i in storage.list("orgs/org_a/")] == [
        ("orgs/org_a/x/1", 1),
        ("orgs/org_a/x/2", 2),
    ]
    assert storage.delete_prefix("orgs/org_a/") == 2
    assert [i.key for i in storage.list("orgs/")] == ["orgs/org_b/x/1"]


def test_directory_roundtrip(storage, tmp_path):
    src = tmp_path / "model"
    (src / "sub").mkdir(parents=True)
    (src / "config.json").write_text("{}")
    (src / "sub" / "weights.bin").write_bytes(b"\x00\x01")
    assert storage.upload_dir(src, "orgs/org_a/models/m1") == 2
    dest = storage.download_dir("orgs/org_a/models/m1", tmp_path / "copy")
    assert (dest / "config.json").read_text() == "{}"
    assert (dest / "sub" / "weights.bin").read_bytes() == b"\x00\x01"


def test_local_storage_refuses_keys_that_escape_its_root(tmp_path):
    storage = LocalObjectStorage(tmp_path / "objects")
    with pytest.raises(ValueError):
        storage.put_bytes("../outside", b"x")

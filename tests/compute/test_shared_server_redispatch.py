"""A pending shared server whose start message was lost is restarted by the sweep."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from longtune.compute import broker, sweep
from longtune.inference.models import ServerStatus, SharedServer
from longtune.inference.shared_servers import claim_server, redispatch_lost_servers
from tests.finetuning.helpers import make_base_model
from tests.inference.helpers import make_endpoint

pytestmark = pytest.mark.django_db(transaction=True)  # the restart publishes on commit


@pytest.fixture
def published(monkeypatch):
    sent: list[tuple[str, list, str]] = []
    monkeypatch.setattr(broker, "send", lambda task, args, queue: sent.append((task, args, queue)))
    return sent


def pending_server(**fields) -> SharedServer:
    base = make_base_model("tiny-shared", "/models/tiny", original=64, maximum=512)
    return SharedServer.objects.create(base_model=base, queue="inference", **fields)


def test_a_lost_server_message_restarts_the_server_as_a_new_generation(org_a, published):
    server = pending_server(started_at=timezone.now() - timedelta(minutes=30))
    endpoint = make_endpoint(org_a.org, hosting="shared_server", shared_server=server)

    done = sweep.redispatch_lost_work(600, lambda queue: True)
    assert done["shared servers"] == [server.public_id]
    server.refresh_from_db()
    assert (server.status, server.generation) == (ServerStatus.PENDING, 2)
    assert published == [("longtune.inference.serve_shared_base", [server.pk, 2], "inference")]
    assert "start message was lost" in endpoint.events.last().message
    # The lost message of generation 1 is refused if it arrives; generation 2 is claimed.
    assert claim_server(server.pk, 1, "late", 1) is None
    assert claim_server(server.pk, 2, "w", 2) is not None


def test_recent_busy_or_running_servers_are_left_alone(published):
    old = timezone.now() - timedelta(minutes=30)
    recent = pending_server(started_at=timezone.now())
    assert redispatch_lost_servers(timedelta(minutes=10), lambda queue: True) == []
    SharedServer.objects.filter(pk=recent.pk).update(started_at=old)
    assert redispatch_lost_servers(timedelta(minutes=10), lambda queue: False) == []  # busy
    SharedServer.objects.filter(pk=recent.pk).update(status=ServerStatus.READY)
    assert redispatch_lost_servers(timedelta(minutes=10), lambda queue: True) == []
    assert published == []

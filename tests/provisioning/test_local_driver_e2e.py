"""The ``local`` driver end to end, with every real part: staff books and provisions an
instance in the admin -> the supervisor (a real ``provisioning_supervise`` process) starts real
``celery worker`` processes on the instance's queue -> the org's fine-tune job runs there (the
worker's name in its events), another org's job never does -> a killed worker is restarted ->
drain waits for the running job, then stops the workers -> decommissioned, processes gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from django.test import Client

from longtune.finetuning.models import FineTuningJob
from longtune.provisioning.drivers.local import LocalDriver
from longtune.provisioning.models import DedicatedInstance
from longtune.tenancy.models import OrgQuota
from tests.conftest import api_client
from tests.finetuning.conftest import FAST_WORKER_ENV, TINY_ORIGINAL_CONTEXT, wait_for
from tests.finetuning.helpers import chat_examples, make_base_model, make_file
from tests.fixtures.services import REPO_ROOT
from tests.provisioning.helpers import staff_user

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
ADMIN = "/admin/provisioning/dedicatedinstance/"


class Supervisor:
    """``manage.py provisioning_supervise`` as a child process, with its log."""

    def __init__(self, env: dict[str, str], log_path) -> None:
        self.log_path = log_path
        self.log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "provisioning_supervise", "--interval", "0.5"],
            cwd=REPO_ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def read_log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


class Logs:
    """What wait_for prints on a timeout: the supervisor's log and every replica's."""

    def __init__(self, supervisor: Supervisor, var_dir) -> None:
        self.supervisor, self.var_dir = supervisor, var_dir

    def read_log(self) -> str:
        replicas = "".join(
            f"\n--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.var_dir.glob("provisioning/*/replica-*.log"))
        )
        return self.supervisor.read_log()[-3000:] + replicas


def create_job(handle, examples: int) -> str:
    file = make_file(handle.org, chat_examples(examples))
    body = {"model": "tiny-dedicated", "training_file": file.public_id, "context_length": 256,
            "hyperparameters": {"n_epochs": 1}, "lora": {"r": 4}, "seed": 1}  # fmt: skip
    response = api_client(handle.key()).post("/v1/fine_tuning/jobs", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def job(job_id: str) -> FineTuningJob:
    return FineTuningJob.objects.unscoped_across_orgs().get(public_id=job_id)


def messages(job_id: str) -> list[str]:
    return list(job(job_id).events.order_by("pk").values_list("message", flat=True))


@pytest.fixture
def supervisor(worker_env, settings, tmp_path):
    env = {
        **worker_env,
        **FAST_WORKER_ENV,
        "LONGTUNE_VAR_DIR": str(settings.VAR_DIR),
        "PROVISIONING_INVENTORY": settings.PROVISIONING_INVENTORY,
        "PROVISIONING_HEARTBEAT_SECONDS": "1",
        "PROVISIONING_DRIVER": "local",
    }
    started = Supervisor(env, tmp_path / "supervisor.log")
    yield started
    started.stop()
    for instance in DedicatedInstance.objects.unscoped_across_orgs():
        LocalDriver().destroy(instance)  # whatever a failing test left running


def test_local_instance_end_to_end(make_org, supervisor, settings, shared_storage, tiny_base_dir):
    customer, other = make_org("Dedicated Co", plan="pro"), make_org("Other Co", plan="pro")
    for handle in (customer, other):
        OrgQuota.objects.create(org=handle.org, requests_per_minute=100_000)
    make_base_model("tiny-dedicated", tiny_base_dir, original=TINY_ORIGINAL_CONTEXT, maximum=1024)
    logs = Logs(supervisor, settings.VAR_DIR)

    # Sales books and provisions it in the admin.
    staff = Client()
    staff.force_login(staff_user())
    booked = staff.post(f"{ADMIN}add/", {
        "org": customer.org.pk, "accelerator_type": "cpu", "accelerators_per_replica": 1,
        "min_replicas": 1, "max_replicas": 1, "replicas": 1, "hosts": "training",
        "pool": "local", "contract_start": "2026-12-01", "contract_end": "2027-12-01",
        "hourly_price": "3.00",
    })  # fmt: skip
    assert booked.status_code == 302, booked.content.decode()[-2000:]
    instance = DedicatedInstance.objects.for_org(customer.org).get()
    body = {"action": "provision_action", "_selected_action": [instance.pk], "confirm": "1"}
    assert staff.post(ADMIN, body).status_code == 302

    def state() -> str:
        return DedicatedInstance.objects.unscoped_across_orgs().get(pk=instance.pk).state

    wait_for(lambda: state() == "ready", timeout=120, what="the instance to be ready", worker=logs)
    driver = LocalDriver()
    (first_pid,) = driver.pids(instance).values()

    # The org's job runs on the instance's worker; another org's job never reaches it.
    mine, theirs = create_job(customer, 6), create_job(other, 6)
    assert job(mine).queue == instance.queue and job(theirs).queue == "gpu"
    wait_for(lambda: job(mine).status in ("succeeded", "failed"), timeout=240,
             what="the job on the dedicated instance", worker=logs)  # fmt: skip
    assert job(mine).status == "succeeded", (job(mine).error, messages(mine))
    worker = f"{instance.public_id}-r0@"
    assert job(mine).worker.startswith(worker)
    assert any(m.startswith(f"Fine-tuning job started on {worker}") for m in messages(mine))
    assert job(theirs).status == "queued" and job(theirs).worker == ""

    # A killed worker is restarted by the supervisor.
    os.kill(first_pid, signal.SIGKILL)
    restarted = wait_for(
        lambda: (pids := driver.pids(instance)) and pids[0] != first_pid and pids[0],
        timeout=60, what="the killed worker to be restarted", worker=logs,
    )  # fmt: skip
    assert restarted != first_pid and state() == "ready"

    # Drain while a longer job runs: the job finishes, then the workers stop.
    long_job = create_job(customer, 45)
    wait_for(lambda: job(long_job).progress.get("step", 0) >= 1, timeout=240,
             what="the long job to start", worker=logs)  # fmt: skip
    body = {"action": "drain_action", "_selected_action": [instance.pk], "confirm": "1"}
    assert staff.post(ADMIN, body).status_code == 302
    assert state() == "draining"
    wait_for(lambda: state() == "decommissioned", timeout=300,
             what="the drain to finish", worker=logs)  # fmt: skip
    finished = job(long_job)
    assert finished.status == "succeeded", (finished.error, messages(long_job))
    assert finished.worker.startswith(worker) and finished.attempts == 1
    assert driver.pids(instance) == {}
    for pid in (first_pid, restarted):
        assert (
            not os.path.exists(f"/proc/{pid}")
            or b"Z" in open(f"/proc/{pid}/stat", "rb").read().split(b")")[-1][:3]
        )
    events = list(
        DedicatedInstance.objects.unscoped_across_orgs()
        .get(pk=instance.pk)
        .events.values_list("to_state", flat=True)
    )
    assert [e for e in events if e] == ["requested", "provisioning", "ready", "draining",
                                         "decommissioned"]  # fmt: skip

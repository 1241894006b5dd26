"""The name of every Celery task, in one place.

Why names and not the task objects: the web process must never import a workers task module
(they are the bridge to torch). Platform code publishes by name through ``compute.broker.send``;
the ``@app.task(name=...)`` decorators in workers/ use these same constants, so a rename can
never leave a sender and its task disagreeing.
"""

from __future__ import annotations

PING = "longtune.ping"
SCRUB_FILE = "longtune.datasets.scrub_file"  # args [file_pk]
TRAIN = "longtune.finetuning.train"  # args [job_pk, attempt]
FINETUNE_WATCHDOG = "longtune.finetuning.watchdog"
SERVE_ENDPOINT = "longtune.inference.serve_endpoint"  # args [endpoint_pk, generation]
SERVE_SHARED_BASE = "longtune.inference.serve_shared_base"  # args [server_pk, generation]
INFERENCE_WATCHDOG = "longtune.inference.watchdog"
REDISPATCH_SWEEP = "longtune.compute.redispatch"  # re-publishes work whose message was lost
EVALUATE = "longtune.evaluation.run"  # args [evaluation_pk, attempt]
EVALUATION_WATCHDOG = "longtune.evaluation.watchdog"
BILLING_SEND_METER_EVENTS = "longtune.billing.send_meter_events"  # outbox -> Stripe meters
BILLING_DUNNING_SWEEP = "longtune.billing.dunning_sweep"  # grace over -> suspended; alerts

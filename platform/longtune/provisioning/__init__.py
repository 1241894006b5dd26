"""Dedicated instances: GPU capacity sales provision for one org, on top of
``compute.DedicatedCapacity``.

- ``models``: ``DedicatedInstance`` (size, replicas, what it hosts, pool, contract, price, the
  fallback-to-shared flag) owning ONE ``DedicatedCapacity`` row; its events; its replicas'
  heartbeats; the instance-hours ledger (``InstanceUsage``) billing meters;
- ``states``: the state machine and which transitions are legal;
- ``services``: every transition (each audited with the staff user) and the capacity row
  kept in step with the state;
- ``inventory``: accelerators per pool (settings) and the refusal to over-allocate;
- ``drivers``: ``local`` (real Celery worker processes on this machine, supervised) and
  ``kubernetes`` (one Deployment per instance), behind one interface;
- ``reconcile``: desired vs actual (the supervisor loop: ``manage.py provisioning_supervise``);
- ``usage``: instance-hours from ready to decommissioned;
- ``admin``: the sales console; ``views``: the read-only ``GET /v1/dedicated_instances``.
"""

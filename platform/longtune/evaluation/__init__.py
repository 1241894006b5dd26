"""Evaluation jobs: long-context suites run on a model as GPU work (the second kind of GPU work,
on ``compute.lifecycle`` exactly as docs/architecture.md's checklist says).

- ``models``: ``EvaluationJob`` (a ``GpuWork``) and its events;
- ``lifecycle``: ``EVALUATIONS``, the compute lifecycle bound to it;
- ``services``: create (model resolved through the catalog, request validated against the
  model's context), cancel, and the results a worker reports;
- ``views``: ``/v1/evaluations`` (create, list, retrieve, cancel, events).
The suites themselves are ``gpu_runtime.context_eval``; the task is ``workers/evaluation.py``.
"""

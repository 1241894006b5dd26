"""Repository-wide pytest setup.

- Loads the real-service fixtures (PostgreSQL, Redis, Celery worker, S3 server).
- Under CI=true an integration test may never be skipped: the run fails instead, so a missing
  service cannot turn the suite silently green.
"""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["tests.fixtures.services"]

_INTEGRATION_IDS: set[str] = set()
_SKIPPED_INTEGRATION: list[str] = []


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("integration"):
            _INTEGRATION_IDS.add(item.nodeid)


def pytest_runtest_logreport(report):
    if report.skipped and report.nodeid in _INTEGRATION_IDS:
        _SKIPPED_INTEGRATION.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("CI", "").lower() == "true" and _SKIPPED_INTEGRATION:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if os.environ.get("CI", "").lower() == "true" and _SKIPPED_INTEGRATION:
        terminalreporter.section("integration tests skipped under CI=true (this fails the run)")
        for nodeid in _SKIPPED_INTEGRATION:
            terminalreporter.write_line(nodeid)

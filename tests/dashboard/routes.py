"""The dashboard's org routes, walked from its URLconf (like tests/platform/v1_routes.py for /v1/).

Each route is paired with how to build its URL kwargs for an object of org A, so the generated
tests (test_isolation.py) attack every route, including ones added later: a new org route whose
kwargs are not known here FAILS ``test_every_org_route_is_known``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.urls import URLPattern

from longtune.dashboard.urls import ORG_PATTERNS


@dataclass(frozen=True)
class OrgRoute:
    name: str
    kwargs: tuple[str, ...]
    view: Callable

    @property
    def permissions(self) -> tuple[str, str] | None:
        return getattr(self.view, "dashboard_permissions", None)


def org_routes() -> list[OrgRoute]:
    out = []
    for pattern in ORG_PATTERNS:
        assert isinstance(pattern, URLPattern), pattern
        kwargs = tuple(k for k in pattern.pattern.converters)
        out.append(OrgRoute(name=f"dashboard:{pattern.name}", kwargs=kwargs, view=pattern.callback))
    return out


def kwargs_builders() -> dict[str, Callable]:
    """URL kwarg -> (org) -> value addressing a fresh object of that org."""
    from longtune.datasets.models import File
    from longtune.evaluation.models import EvaluationJob
    from longtune.finetuning.models import FineTuningJob
    from longtune.inference.models import Endpoint
    from longtune.tenancy.models import ApiKey, Invitation, Membership
    from tests.org_factories import load_all_factories

    factories = load_all_factories()

    def member(org):
        return factories[Membership](org).user.public_id

    return {
        "key_id": lambda org: factories[ApiKey](org).public_id,
        "member_id": member,
        "file_id": lambda org: factories[File](org).public_id,
        "job_id": lambda org: factories[FineTuningJob](org).public_id,
        "endpoint_id": lambda org: factories[Endpoint](org).public_id,
        "invitation_id": lambda org: factories[Invitation](org).public_id,
        "eval_id": lambda org: factories[EvaluationJob](org).public_id,
        "action": lambda org: "stop",
    }

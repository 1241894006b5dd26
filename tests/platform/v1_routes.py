"""Enumerate the /v1/ routes from the live URLconf (shared by the generated API tests).

Nothing here is a hand-written list of endpoints: a route added anywhere under /v1/ shows up.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from django.urls import URLPattern, URLResolver, get_resolver

from longtune.api.viewsets import OrgScopedViewSet

# Routes reachable without an API key, each with the reason. Everything else under /v1/ must
# authenticate with a key and is attacked by the isolation tests.
PUBLIC_ROUTES: dict[str, str] = {
    "v1:auth-signup": "creates a new organization; the caller has no org or key yet",
    "v1:invitation-accept": "the invitee has no key yet; the invitation token authenticates",
    "v1:auth-signup-confirm": "the new owner has no key yet; the mailed signup token authenticates",
    "v1:auth-password-reset": "a person who forgot their password has no session; answers the same for any email",
    "v1:openapi-schema": "the API description; contains no tenant data",
    "v1:billing-webhook": "Stripe's event delivery; the signature over the raw body authenticates",
    "v1:billing-webhook-thin": "Stripe's thin event notifications; signed like the webhook",
    "v1:docs": "Swagger UI page for the schema; contains no tenant data",
}

WRITE_METHODS = ("post", "put", "patch", "delete")


@dataclass(frozen=True)
class Route:
    name: str  # namespaced, e.g. "v1:api_key-detail"
    template: str  # the URL regex/route, for messages
    view_class: type
    methods: tuple[str, ...]  # lowercase HTTP methods the route answers
    kwargs: tuple[str, ...]  # path parameters

    @property
    def is_public(self) -> bool:
        return self.name in PUBLIC_ROUTES

    @property
    def org_scoped_viewset(self) -> type[OrgScopedViewSet] | None:
        return self.view_class if issubclass(self.view_class, OrgScopedViewSet) else None

    def __str__(self) -> str:
        return self.name


def _walk(patterns, prefix: str = "", namespace: str = "") -> Iterator[tuple[str, str, URLPattern]]:
    for entry in patterns:
        if isinstance(entry, URLResolver):
            ns = ":".join(part for part in (namespace, entry.namespace or "") if part)
            yield from _walk(entry.url_patterns, prefix + str(entry.pattern), ns)
        else:
            name = f"{namespace}:{entry.name}" if namespace and entry.name else (entry.name or "")
            yield prefix + str(entry.pattern), name, entry


def _methods(callback, view_class: type) -> tuple[str, ...]:
    actions = getattr(callback, "actions", None)
    if actions:  # a DRF viewset route: {"get": "list", "post": "create"}
        return tuple(sorted(actions))
    return tuple(
        sorted(
            m
            for m in view_class.http_method_names
            if m not in ("options", "head") and hasattr(view_class, m)
        )
    )


def v1_routes() -> list[Route]:
    routes = []
    for template, name, pattern in _walk(get_resolver().url_patterns):
        if not template.lstrip("^").startswith("v1/"):
            continue
        callback = pattern.callback
        view_class = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
        if view_class is None:
            raise AssertionError(
                f"/v1/ route {template!r} is a function view; use a DRF view class"
            )
        if not name:
            raise AssertionError(f"/v1/ route {template!r} has no name; name every route")
        routes.append(
            Route(
                name=name,
                template=template,
                view_class=view_class,
                methods=_methods(callback, view_class),
                kwargs=tuple(pattern.pattern.regex.groupindex),
            )
        )
    return routes

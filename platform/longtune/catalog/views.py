"""/v1/models: the base models offered to the org plus its own fine-tuned models.

Named ``CatalogModelViewSet`` so it does not shadow DRF's ``ModelViewSet``.
"""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from longtune.api.errors import ApiError
from longtune.api.pagination import list_envelope
from longtune.api.viewsets import OrgScopedViewSet
from longtune.catalog.models import FineTunedModel
from longtune.catalog.resolution import visible_base_models
from longtune.catalog.serializers import (
    ModelDeletedSerializer,
    base_model_payload,
    fine_tuned_model_payload,
)
from longtune.catalog.services import delete_fine_tuned_model


def _not_found(name: str) -> ApiError:
    """The 404 of /v1/models/{id}, for a missing model and another org's alike (the same
    ``not_found`` every other /v1/ resource answers; tests/platform/test_tenant_isolation.py)."""
    return ApiError(
        status=404,
        code="not_found",
        message=f"The model {name[:300]!r} does not exist or you do not have access to it.",
        param="model",
    )


class CatalogModelViewSet(OrgScopedViewSet):
    """Base models offered to the org plus its own fine-tuned models. Only fine-tuned models
    are org-owned (the scoped queryset); another org's ``ft:...`` id is simply not found."""

    model = FineTunedModel

    def safely_get_queryset(self, queryset: QuerySet) -> QuerySet:
        return queryset.filter(deleted_at__isnull=True).select_related(
            "org", "base_model", "job", "parent_model"
        )

    @extend_schema(operation_id="models_list", responses={200: OpenApiTypes.OBJECT})
    def list(self, request: Request) -> Response:
        data = [base_model_payload(m) for m in visible_base_models(request.org)]
        data += [fine_tuned_model_payload(m) for m in self.get_queryset().order_by("-pk")]
        return Response(list_envelope(data))

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def retrieve(self, request: Request, id: str) -> Response:
        fine_tuned = self.get_queryset().filter(name=id).first()
        if fine_tuned is not None:
            return Response(fine_tuned_model_payload(fine_tuned))
        base = visible_base_models(request.org).filter(name=id).first()
        if base is not None:
            return Response(base_model_payload(base))
        raise _not_found(id)

    @extend_schema(
        operation_id="models_delete",
        responses={200: ModelDeletedSerializer},
        description="Delete one of the org's fine-tuned models (OpenAI's DELETE /v1/models/"
        "{model}): it disappears from /v1/models and from inference, its artifact is removed. "
        "409 model_in_use while an endpoint serves it (stop or delete the endpoint first); "
        "403 model_not_deletable for a base model; 404 for anything the org cannot see.",
    )
    def destroy(self, request: Request, id: str) -> Response:
        fine_tuned = self.get_queryset().filter(name=id).first()
        if fine_tuned is not None:
            return Response(delete_fine_tuned_model(fine_tuned, request=request))
        if visible_base_models(request.org).filter(name=id).exists():
            raise ApiError(
                status=403,
                code="model_not_deletable",
                message=f"'{id}' is a base model; only your fine-tuned models can be deleted.",
                param="model",
            )
        raise _not_found(id)

    @classmethod
    def url_kwargs_for(cls, instance: FineTunedModel) -> dict[str, str]:
        return {cls.lookup_url_kwarg: instance.name}


# Model ids are names ("tiny-llama", "ft:tiny-llama:acme:bot:ftjob-…"), not prefixed ids.
CatalogModelViewSet.lookup_value_regex = r"[^/]{1,300}"

"""Which model a name means for an org: ``resolve_model`` and the one 404 it raises.

Why here: fine-tuning (a job's base), inference (an endpoint's model, the gateway's route) and
datasets (the tokenizer that counts a file) all turn a client's model name into catalog rows;
they share this one answer, so "another org's ft: name" is a missing model everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet

from longtune.api.errors import ApiError
from longtune.catalog.models import BaseModel, FineTunedModel
from longtune.tenancy.models import Organization


def serves_as_adapter(fine_tuned: FineTunedModel | None) -> bool:
    """THE served-as-adapter decision, for a resolved model or an endpoint's model: a LoRA
    fine-tune is served as an adapter on its base; a base model or a full fine-tune (whose
    weights are its own) is the served weights itself."""
    return fine_tuned is not None and fine_tuned.method == "lora"


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    base: BaseModel
    fine_tuned: FineTunedModel | None

    @property
    def serves_adapter(self) -> bool:
        return serves_as_adapter(self.fine_tuned)

    @property
    def runs_on_base_weights(self) -> bool:
        """The base's weights unchanged (plus maybe an adapter): what a process serving the
        base can serve too. A full fine-tune is not."""
        return self.fine_tuned is None or self.serves_adapter

    @property
    def context_length(self) -> int:
        """Fine-tuned: the context it was trained at; base: its original context."""
        if self.fine_tuned is not None:
            return self.fine_tuned.context_length
        return self.base.original_context_length


def model_not_found(name: str, param: str = "model") -> ApiError:
    return ApiError(
        status=404,
        code="model_not_found",
        message=f"The model '{name}' does not exist or you do not have access to it.",
        param=param,
    )


def visible_base_models(org: Organization) -> QuerySet[BaseModel]:
    """Base models the org may use: the public ones plus those registered for it alone."""
    return BaseModel.objects.visible_to(org)


def visible_fine_tuned_models(org: Organization) -> QuerySet[FineTunedModel]:
    """Fine-tuned models the org may use: its own and not deleted, never another org's."""
    return FineTunedModel.objects.for_org(org).filter(deleted_at__isnull=True)


def resolve_model(org: Organization, name: str) -> ResolvedModel:
    """The org's own fine-tuned model, or a base model visible to it; anything else 404s
    (another org's ``ft:`` name included: it is indistinguishable from a missing one)."""
    fine_tuned = (
        visible_fine_tuned_models(org).select_related("base_model").filter(name=name).first()
    )
    if fine_tuned is not None:
        return ResolvedModel(name, fine_tuned.base_model, fine_tuned)
    base = visible_base_models(org).filter(name=name).first()
    if base is not None:
        return ResolvedModel(name, base, None)
    raise model_not_found(name)

"""resolve_model: which model a name means for an org, and the one 404 for everything else."""

from __future__ import annotations

import pytest

from longtune.api.errors import ApiError
from longtune.catalog.resolution import resolve_model
from tests.catalog.helpers import make_fine_tuned
from tests.finetuning.helpers import make_base_model

pytestmark = pytest.mark.django_db


def assert_not_found(org, name: str) -> None:
    with pytest.raises(ApiError) as raised:
        resolve_model(org, name)
    error = raised.value
    assert (error.status_code, error.code, error.param) == (404, "model_not_found", "model")
    assert name in error.message


def test_own_fine_tune_resolves_with_its_base(org_a):
    model = make_fine_tuned(org_a.org)
    resolved = resolve_model(org_a.org, model.name)
    assert (resolved.name, resolved.fine_tuned, resolved.base) == (
        model.name,
        model,
        model.base_model,
    )
    assert resolved.context_length == 256  # the fine-tune's, not the base's 64


def test_another_orgs_fine_tune_is_not_found(org_a, org_b):
    theirs = make_fine_tuned(org_b.org)
    assert resolve_model(org_b.org, theirs.name).fine_tuned == theirs
    assert_not_found(org_a.org, theirs.name)


def test_public_base_for_everyone_private_base_for_its_org_only(org_a, org_b):
    public = make_base_model("public-base")
    private = make_base_model("private-base", is_public=False, org=org_b.org)
    resolved = resolve_model(org_a.org, public.name)
    assert (resolved.base, resolved.fine_tuned) == (public, None)
    assert resolved.context_length == public.original_context_length
    assert resolve_model(org_b.org, private.name).base == private
    assert_not_found(org_a.org, private.name)


def test_unknown_name_is_not_found(org_a):
    make_base_model()
    assert_not_found(org_a.org, "no-such-model")

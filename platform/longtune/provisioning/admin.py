"""The sales console: dedicated instances in the Django admin.

Sales book an instance with the add form (the pool's free accelerators are checked there and
again under a lock in the service) and change it only through actions, each with a
confirmation page and each audited with the staff user: provision, resize, drain,
decommission, extend contract. ``capacity/`` shows accelerators by type per pool. The
permissions are the model's custom ones (the "Sales" group holds exactly those,
``provisioning.sales``).
"""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet, Sum
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from longtune.provisioning import inventory, services
from longtune.provisioning.health import replica_health
from longtune.provisioning.models import DedicatedInstance, InstanceEvent, InstanceUsage
from longtune.provisioning.states import IllegalTransition
from longtune.tenancy.cross_org_admin import CrossOrgAdminMixin, CrossOrgModelAdmin
from longtune.tenancy.models import Organization

BOOKING_FIELDS = (
    "org", "name", "accelerator_type", "accelerators_per_replica", "min_replicas",
    "max_replicas", "replicas", "hosts", "pool", "contract_start", "contract_end",
    "hourly_price", "fallback_to_shared",
)  # fmt: skip


class BookingForm(forms.ModelForm):
    """The add form: what sales sold. The org list needs no permission on organizations."""

    org = forms.ModelChoiceField(queryset=Organization.objects.order_by("slug"))

    class Meta:
        model = DedicatedInstance
        fields = BOOKING_FIELDS

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        try:
            if data.get("pool") and data.get("accelerator_type"):
                inventory.check_fits(
                    data["pool"],
                    data["accelerator_type"],
                    data.get("accelerators_per_replica", 1) * data.get("max_replicas", 1),
                )
        except inventory.CapacityExceeded as exc:
            raise ValidationError(str(exc)) from exc
        return data


class ResizeForm(forms.Form):
    min_replicas = forms.IntegerField(min_value=1)
    replicas = forms.IntegerField(min_value=1)
    max_replicas = forms.IntegerField(min_value=1)


class ExtendForm(forms.Form):
    contract_end = forms.DateField(help_text="YYYY-MM-DD")


class EventInline(CrossOrgAdminMixin, admin.TabularInline):
    """The state history on the instance page (read-only)."""

    model = InstanceEvent
    fields = ("created_at", "level", "from_state", "to_state", "actor", "message")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ("pk",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(DedicatedInstance)
class DedicatedInstanceAdmin(CrossOrgModelAdmin):
    list_display = (
        "public_id", "org", "size", "replicas", "hosts", "pool", "state", "contract_end",
        "hourly_price",
    )  # fmt: skip
    list_filter = ("state", "pool", "accelerator_type", "hosts")
    search_fields = ("public_id", "org__slug", "org__name", "name")
    actions = ["provision_action", "resize_action", "drain_action", "decommission_action",
               "extend_contract_action"]  # fmt: skip
    inlines = [EventInline]
    change_form_template = "admin/provisioning/dedicatedinstance/change_form.html"
    change_list_template = "admin/provisioning/dedicatedinstance/change_list.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return DedicatedInstance.objects.unscoped_across_orgs().select_related("org", "capacity")

    # ---------------------------------------------------------------- add = book

    def get_inlines(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.inlines if obj is not None else []  # no history before the booking

    def get_form(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = BookingForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return BOOKING_FIELDS
        return (*BOOKING_FIELDS, "public_id", "state", "failure_reason", "driver", "driver_ref",
                "created_at", "provisioning_at", "ready_at", "draining_at",
                "decommissioned_at", "failed_at")  # fmt: skip

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return () if obj is None else self.get_fields(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # changes go through the audited actions only

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # decommission instead: the history and the usage ledger stay

    def save_model(self, request: HttpRequest, obj: DedicatedInstance, form: Any, change: bool):
        data = {name: form.cleaned_data[name] for name in BOOKING_FIELDS}
        created = services.request_instance(staff=request.user, request=request, **data)
        obj.__dict__.update(created.__dict__)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        return  # the service wrote everything; the events inline is read-only

    # ---------------------------------------------------------------- the per-instance page

    def change_view(self, request, object_id, form_url="", extra_context=None):
        instance = self.get_queryset(request).filter(pk=object_id).first()
        if instance is not None:
            extra_context = {**(extra_context or {}), **self._instance_context(instance)}
        return super().change_view(request, object_id, form_url, extra_context)

    def _instance_context(self, instance: DedicatedInstance) -> dict[str, Any]:
        from longtune.finetuning.models import FineTuningJob
        from longtune.inference.models import Endpoint

        jobs = list(
            FineTuningJob.objects.for_org(instance.org)
            .filter(queue=instance.queue)
            .order_by("-pk")[:50]
        )
        endpoints = list(Endpoint.objects.for_org(instance.org).filter(queue=instance.queue)[:50])
        busy = Decimal(0)
        for job in jobs:
            if job.started_at:
                end = job.finished_at or datetime.datetime.now(datetime.UTC)
                busy += Decimal((end - job.started_at).total_seconds()) / Decimal(3600)
        paid = instance.usage.aggregate(h=Sum("hours"))["h"] or Decimal(0)
        per = instance.accelerators_per_replica
        return {
            "health": replica_health(instance),
            "jobs": jobs,
            "endpoints": endpoints,
            "gpu_hours_busy": (busy * per).quantize(Decimal("0.01")),
            "gpu_hours_paid": (paid * per * instance.replicas).quantize(Decimal("0.01")),
            "heartbeats": list(instance.heartbeats.order_by("worker")),
        }

    # ---------------------------------------------------------------- capacity view

    def get_urls(self):
        capacity = path(
            "capacity/",
            self.admin_site.admin_view(self.capacity_view),
            name="provisioning_dedicatedinstance_capacity",
        )
        return [capacity, *super().get_urls()]

    def capacity_view(self, request: HttpRequest) -> HttpResponse:
        if not request.user.has_perm("provisioning.view_capacity"):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "title": "Accelerator capacity",
            "rows": inventory.capacity_rows(),
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/provisioning/capacity.html", context)

    # ---------------------------------------------------------------- actions

    def _perm(self, request: HttpRequest, name: str) -> bool:
        return request.user.has_perm(f"provisioning.{name}_dedicatedinstance")

    def has_provision_permission(self, request: HttpRequest) -> bool:
        return self._perm(request, "provision")

    def has_resize_permission(self, request: HttpRequest) -> bool:
        return self._perm(request, "resize")

    def has_drain_permission(self, request: HttpRequest) -> bool:
        return self._perm(request, "drain")

    def has_decommission_permission(self, request: HttpRequest) -> bool:
        return self._perm(request, "decommission")

    def has_extend_contract_permission(self, request: HttpRequest) -> bool:
        return self._perm(request, "extend_contract")

    def _confirm(
        self,
        request: HttpRequest,
        queryset: QuerySet,
        *,
        action: str,
        title: str,
        apply: Any,
        form_class: type[forms.Form] | None = None,
    ) -> HttpResponse | None:
        """Render the confirmation page; on "confirm", apply to each instance (audited by the
        service with ``request.user``) and report per instance."""
        form = (
            form_class(request.POST if "confirm" in request.POST else None) if form_class else None
        )
        if "confirm" in request.POST and (form is None or form.is_valid()):
            for instance in queryset:
                try:
                    apply(instance, **(form.cleaned_data if form else {}))
                except (IllegalTransition, ValidationError, inventory.CapacityExceeded) as exc:
                    text = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
                    self.message_user(request, f"{instance.public_id}: {text}", messages.ERROR)
                else:
                    self.message_user(request, f"{instance.public_id}: {title} done.")
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": f"{title}: are you sure?",
            "action": action,
            "action_title": title,
            "instances": list(queryset),
            "form": form or (form_class() if form_class else None),
            "opts": self.model._meta,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/provisioning/confirm_action.html", context)

    @admin.action(description="Provision selected instances", permissions=["provision"])
    def provision_action(self, request, queryset):
        return self._confirm(request, queryset, action="provision_action", title="Provision",
                             apply=lambda i: services.provision(i, staff=request.user, request=request))  # fmt: skip

    @admin.action(description="Resize selected instances", permissions=["resize"])
    def resize_action(self, request, queryset):
        return self._confirm(request, queryset, action="resize_action", title="Resize",
                             form_class=ResizeForm,
                             apply=lambda i, **f: services.resize(i, staff=request.user, request=request, **f))  # fmt: skip

    @admin.action(description="Drain selected instances", permissions=["drain"])
    def drain_action(self, request, queryset):
        return self._confirm(request, queryset, action="drain_action", title="Drain",
                             apply=lambda i: services.drain(i, staff=request.user, request=request))  # fmt: skip

    @admin.action(description="Decommission selected instances", permissions=["decommission"])
    def decommission_action(self, request, queryset):
        return self._confirm(request, queryset, action="decommission_action", title="Decommission",
                             apply=lambda i: services.decommission(i, staff=request.user, request=request))  # fmt: skip

    @admin.action(description="Extend the contract of selected instances",
                  permissions=["extend_contract"])  # fmt: skip
    def extend_contract_action(self, request, queryset):
        return self._confirm(request, queryset, action="extend_contract_action",
                             title="Extend contract", form_class=ExtendForm,
                             apply=lambda i, **f: services.extend_contract(i, staff=request.user, request=request, **f))  # fmt: skip

    def response_add(self, request, obj, post_url_continue=None):
        url = reverse("admin:provisioning_dedicatedinstance_change", args=[obj.pk])
        self.message_user(request, f"{obj.public_id} booked ({obj.size} in {obj.pool}).")
        return HttpResponseRedirect(url)


@admin.register(InstanceUsage)
class InstanceUsageAdmin(CrossOrgModelAdmin):
    list_display = ("instance", "org", "hour_start", "hours", "hourly_price")
    list_filter = ("instance__pool",)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return InstanceUsage.objects.unscoped_across_orgs().select_related("instance", "org")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

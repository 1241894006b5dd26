"""Forms for the pages that are not a service's request body (log in). Sign-up and the other
write pages validate with the API's own serializers, so both doors refuse the same input."""

from __future__ import annotations

from django import forms
from django.contrib.auth.forms import AuthenticationForm

from longtune.dashboard.throttling import login_blocked, record_login_failure


class ThrottledLoginForm(AuthenticationForm):
    """Django's log-in form, refusing early once an IP or an email failed too often."""

    error_messages = {
        **AuthenticationForm.error_messages,
        "throttled": "Too many failed log-ins. Wait a few minutes and try again.",
    }

    def clean(self):
        email = self.data.get("username", "") or ""
        if self.request is not None and login_blocked(self.request, email):
            raise forms.ValidationError(self.error_messages["throttled"], code="throttled")
        try:
            return super().clean()
        except forms.ValidationError:
            if self.request is not None:
                record_login_failure(self.request, email)
            raise

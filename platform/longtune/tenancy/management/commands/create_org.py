"""``python manage.py create_org --email a@b.c --org "Acme" --password ...`` -> prints an API key.

Only the key goes to stdout (``KEY=$(python manage.py create_org ...)`` in scripts); notes go
to stderr. Re-running with the same email and org name issues a fresh owner key for the
existing org instead of creating a duplicate org.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from longtune.api.errors import ApiError
from longtune.tenancy.models import Membership, Plan, normalize_email_address
from longtune.tenancy.roles import Role
from longtune.tenancy.services.api_keys import issue_api_key
from longtune.tenancy.services.organizations import create_organization_with_owner


class Command(BaseCommand):
    help = "Create (or reuse) an organization owned by a user and print a new owner API key."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--email", required=True)
        parser.add_argument("--org", required=True, help="Organization name.")
        parser.add_argument("--password", required=True)
        parser.add_argument("--plan", default=Plan.FREE, choices=Plan.values)

    def handle(self, *args, email: str, org: str, password: str, plan: str, **options) -> None:
        try:
            secret = self._create_or_reuse(email=email, org_name=org, password=password, plan=plan)
        except ApiError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
        self.stdout.write(secret)

    @transaction.atomic
    def _create_or_reuse(self, *, email: str, org_name: str, password: str, plan: str) -> str:
        owned = (
            Membership.objects.unscoped_across_orgs()
            .select_related("org", "user")
            .filter(
                user__email=normalize_email_address(email),
                role=Role.OWNER,
                org__name=org_name.strip(),
            )
            .first()
        )
        if owned is not None:
            if not owned.user.check_password(password):
                raise CommandError("invalid_credentials: wrong password for the existing user")
            _, secret = issue_api_key(
                org=owned.org, created_by=owned.user, role=Role.OWNER, name="create_org"
            )
            self.stderr.write(f"Organization {owned.org.public_id} exists; issued a new owner key.")
            return secret
        created = create_organization_with_owner(
            email=email, password=password, org_name=org_name, plan=plan, existing_user_ok=True
        )
        self.stderr.write(
            f"Created organization {created.org.public_id} ({created.org.slug}) owned by {created.user.email}."
        )
        return created.secret

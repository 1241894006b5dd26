"""``manage.py billing_reconcile [--org SLUG] [--period YYYY-MM]``: ledger vs meter events sent.

Exits 1 when any org/meter has more usage in the ledger than was sent (or the reverse), so a
cron job or CI can alert on it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError

from longtune.billing.reconcile import reconcile
from longtune.tenancy.models import Organization


class Command(BaseCommand):
    help = "Compare the usage ledger with the meter events sent to Stripe, per org and meter."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--org", help="Only this org (slug).")
        parser.add_argument("--period", help="YYYY-MM (default: the current month, UTC).")

    def handle(self, *args, **options) -> None:
        orgs = Organization.objects.order_by("slug")
        if options["org"]:
            orgs = orgs.filter(slug=options["org"])
        at = None
        if options["period"]:
            try:
                at = datetime.strptime(options["period"], "%Y-%m").replace(tzinfo=UTC)
            except ValueError as error:
                raise CommandError("--period must be YYYY-MM") from error
        rows = reconcile(list(orgs), at)
        self.stdout.write(f"{'org':30} {'meter':20} {'ledger':>14} {'sent':>14} {'pending':>14}")
        for row in rows:
            flag = "" if row.missing == 0 else f"  MISSING {row.missing}"
            self.stdout.write(
                f"{row.org:30} {row.meter:20} {row.ledger:>14} {row.sent:>14} {row.pending:>14}{flag}"
            )
        if any(row.missing for row in rows):
            raise SystemExit(1)

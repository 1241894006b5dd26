"""manage.py ensure_sales_group: (re)create the Sales staff group with exactly its permissions."""

from django.core.management.base import BaseCommand

from longtune.provisioning.sales import SALES_PERMISSIONS, ensure_sales_group


class Command(BaseCommand):
    help = "Create or refresh the Sales staff group (dedicated instances and contracts only)."

    def handle(self, *args, **options):
        group = ensure_sales_group()
        self.stdout.write(f"{group.name}: {len(SALES_PERMISSIONS)} permissions")

"""Regenerate docs/permissions.md from tenancy.roles.PERMISSION_MATRIX."""

from django.conf import settings
from django.core.management.base import BaseCommand

from longtune.tenancy.roles import render_permissions_markdown


class Command(BaseCommand):
    help = "Write docs/permissions.md from the permission matrix in code."

    def handle(self, *args, **options) -> None:
        path = settings.BASE_DIR / "docs" / "permissions.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_permissions_markdown())
        self.stdout.write(f"wrote {path}")

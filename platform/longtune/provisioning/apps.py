from django.apps import AppConfig


class ProvisioningConfig(AppConfig):
    name = "longtune.provisioning"
    label = "provisioning"
    verbose_name = "Dedicated instances"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from longtune.provisioning.sales import ensure_sales_group_after_migrate

        # After every migrate (and the test database's flushes): the Sales group exists with
        # exactly its permissions, which only exist once post_migrate created them.
        post_migrate.connect(ensure_sales_group_after_migrate, sender=self)

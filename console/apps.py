from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """The staff console: dashboard, live view and exports, under the admin site."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "console"
    verbose_name = "Staff console"

    def ready(self) -> None:
        from django.contrib import admin

        # The admin's home page links to the dashboard and the live view.
        admin.site.index_template = "console/admin_index.html"

from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """The staff console: dashboard, live view and exports, under the admin site."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "console"
    verbose_name = "Staff console"

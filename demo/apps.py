from django.apps import AppConfig


class DemoConfig(AppConfig):
    """The /demo/ page: try any active agent profile through the real widget."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "demo"
    verbose_name = "Demo page"

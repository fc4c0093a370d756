from django.apps import AppConfig


class ConversationSessionsConfig(AppConfig):
    """Our `sessions` app; django.contrib.sessions already owns the label `sessions`."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "sessions"
    label = "conversation_sessions"
    verbose_name = "Conversation sessions"

    def ready(self) -> None:
        from . import schema, signals  # noqa: F401  (OpenAPI widget-key scheme; CORS origin check per company)

from django.apps import AppConfig


class VoiceAgentsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "voiceagents"
    verbose_name = "Voice agents"

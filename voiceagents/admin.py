from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest

from .models import Company, CompanyTool, VoiceAgent, new_signing_secret


class VoiceAgentInline(admin.TabularInline):
    model = VoiceAgent
    extra = 0
    fields = ("name", "mode", "llm_provider", "stt_provider", "tts_provider", "is_active")
    show_change_link = True


@admin.register(Company)
class CompanyAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "slug",
        "widget_key_hint",
        "live_sessions",
        "max_concurrent_sessions",
        "is_active",
        "created_at",
    )
    list_filter = ("is_active",)
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    # The key is shown once, on the change page, to paste into the widget tag;
    # lists show only a hint.
    readonly_fields = ("widget_key", "created_at", "updated_at")
    inlines = [VoiceAgentInline]

    @admin.display(description="widget key")
    def widget_key_hint(self, obj: Company) -> str:
        return obj.widget_key_hint

    def get_queryset(self, request: HttpRequest) -> QuerySet[Company]:
        # The admission counter (sessions app), beside the limit it is checked against.
        from sessions.models import CompanyLiveSessions

        live = CompanyLiveSessions.objects.filter(company=OuterRef("pk")).values("live")[:1]
        return super().get_queryset(request).annotate(live_sessions=Coalesce(Subquery(live), 0))

    @admin.display(description="live sessions", ordering="live_sessions")
    def live_sessions(self, obj: Any) -> int:
        return int(obj.live_sessions)


@admin.register(VoiceAgent)
class VoiceAgentAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "company",
        "mode",
        "llm_provider",
        "llm_model",
        "stt_provider",
        "tts_provider",
        "is_active",
    )
    list_filter = ("mode", "is_active", "company", "llm_provider", "stt_provider", "tts_provider")
    search_fields = ("name", "company__name")
    readonly_fields = ("created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("company", "name", "mode", "is_active", "reply_policy")}),
        ("Conversation", {"fields": ("system_prompt", "greeting_message")}),
        (
            "Providers (blank: deployment default)",
            {
                "fields": (
                    "llm_provider",
                    "llm_model",
                    "stt_provider",
                    "tts_provider",
                    "tts_voice",
                    "vad_enabled",
                    "allow_interruptions",
                )
            },
        ),
        (
            "Turn-taking (blank: deployment default)",
            {"fields": ("turn_detection", "min_endpointing_delay", "max_endpointing_delay")},
        ),
        (
            "Tools",
            {
                "fields": (
                    "tool_end_call",
                    "tool_take_message",
                    "tool_transfer_to_human",
                    "handoff_timeout_seconds",
                    "http_tools",
                )
            },
        ),
        ("Times", {"fields": ("created_at", "updated_at")}),
    )
    filter_horizontal = ("http_tools",)


class CompanyToolForm(forms.ModelForm):
    # Write-only: the secret is never rendered back (page source, browser autofill).
    new_signing_secret = forms.CharField(
        label="Signing secret",
        required=False,
        strip=True,
        min_length=16,
        max_length=128,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Shared with the company's endpoint, which checks each request's signature "
        "(docs/security.md). Leave blank to keep the current secret; a new tool left blank gets a "
        "generated one, which is never shown, so set your own to share it.",
    )

    url = forms.URLField(label="HTTPS URL", max_length=500, assume_scheme="https")

    class Meta:
        model = CompanyTool
        fields = (
            "company",
            "name",
            "description",
            "parameters",
            "url",
            "timeout_seconds",
            "max_response_bytes",
            "is_active",
        )

    def save(self, commit: bool = True) -> CompanyTool:
        tool = super().save(commit=False)
        secret = self.cleaned_data.get("new_signing_secret")
        if secret:
            tool.signing_secret = secret
        elif not tool.signing_secret:
            tool.signing_secret = new_signing_secret()
        if commit:
            tool.save()
            self.save_m2m()
        return tool


@admin.register(CompanyTool)
class CompanyToolAdmin(admin.ModelAdmin):
    form = CompanyToolForm
    list_display = ("name", "company", "url", "timeout_seconds", "max_response_bytes", "is_active")
    list_filter = ("is_active", "company")
    search_fields = ("name", "company__name", "url")
    readonly_fields = ("created_at", "updated_at")
    fields = (
        "company",
        "name",
        "description",
        "parameters",
        "url",
        "new_signing_secret",
        "timeout_seconds",
        "max_response_bytes",
        "is_active",
        "created_at",
        "updated_at",
    )

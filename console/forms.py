"""The console's filter: which sessions the dashboard, the export and the live view look at."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django import forms
from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone

from sessions.models import ConversationSession
from voiceagents.catalog import LLMProvider, STTProvider, TTSProvider
from voiceagents.models import Company, VoiceAgent

DEFAULT_DAYS = 7
MAX_DAYS = 366
PROVIDER_CHOICES = [("", "any provider")] + sorted(
    {(v, label) for choices in (LLMProvider, STTProvider, TTSProvider) for v, label in choices.choices}
)


def deployment_tz() -> ZoneInfo:
    return ZoneInfo(settings.TIME_ZONE)


@dataclass(frozen=True)
class SessionFilter:
    """A validated filter: whole days [start, end] in the deployment's time zone."""

    start: date
    end: date
    company: Company | None = None
    agent: VoiceAgent | None = None
    provider: str = ""

    @property
    def since(self) -> datetime:
        return datetime.combine(self.start, time.min, tzinfo=deployment_tz())

    @property
    def until(self) -> datetime:
        """The first instant after the range (midnight after the end day)."""
        return datetime.combine(self.end + timedelta(days=1), time.min, tzinfo=deployment_tz())

    @property
    def days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range((self.end - self.start).days + 1)]

    def scope(self, queryset: QuerySet[Any], prefix: str = "") -> QuerySet[Any]:
        """Company, agent and provider conditions (not the dates) on sessions or on rows under them."""
        conditions = Q()
        if self.company is not None:
            conditions &= Q(**{f"{prefix}company": self.company})
        if self.agent is not None:
            conditions &= Q(**{f"{prefix}agent": self.agent})
        if self.provider:
            conditions &= (
                Q(**{f"{prefix}config__llm_provider": self.provider})
                | Q(**{f"{prefix}config__stt_provider": self.provider})
                | Q(**{f"{prefix}config__tts_provider": self.provider})
            )
        return queryset.filter(conditions)

    def sessions(self) -> QuerySet[ConversationSession]:
        """Sessions created within the range and matching the filter."""
        return self.scope(ConversationSession.objects.order_by()).filter(
            created_at__gte=self.since, created_at__lt=self.until
        )

    def querystring(self) -> dict[str, str]:
        params = {"start": self.start.isoformat(), "end": self.end.isoformat()}
        if self.company:
            params["company"] = str(self.company.pk)
        if self.agent:
            params["agent"] = str(self.agent.pk)
        if self.provider:
            params["provider"] = self.provider
        return params


class SessionFilterForm(forms.Form):
    company = forms.ModelChoiceField(
        queryset=Company.objects.all(), required=False, empty_label="all companies"
    )
    agent = forms.ModelChoiceField(
        queryset=VoiceAgent.objects.select_related("company"), required=False, empty_label="all agents"
    )
    provider = forms.ChoiceField(choices=PROVIDER_CHOICES, required=False)
    start = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        today = timezone.now().astimezone(deployment_tz()).date()
        end = data.get("end") or today
        start = data.get("start") or end - timedelta(days=DEFAULT_DAYS - 1)
        if "start" in self.errors or "end" in self.errors:
            return data
        if start > end:
            raise forms.ValidationError("The start date is after the end date.", code="reversed")
        if (end - start).days + 1 > MAX_DAYS:
            raise forms.ValidationError(f"Choose at most {MAX_DAYS} days.", code="too_long")
        agent, company = data.get("agent"), data.get("company")
        if agent is not None and company is not None and agent.company_id != company.pk:
            self.add_error("agent", "This agent belongs to another company.")
        data["start"], data["end"] = start, end
        return data

    def to_filter(self) -> SessionFilter:
        data = self.cleaned_data
        return SessionFilter(
            start=data["start"],
            end=data["end"],
            company=data.get("company"),
            agent=data.get("agent"),
            provider=data.get("provider") or "",
        )


def default_filter() -> SessionFilter:
    form = SessionFilterForm(data={})
    form.is_valid()
    return form.to_filter()

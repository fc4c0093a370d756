"""Reads with a rule in them, against the real database."""

from __future__ import annotations

from typing import Any

import pytest

from sessions.selectors import agent_active_for_company, company_by_widget_key
from tests.factories import CompanyFactory, VoiceAgentFactory
from voiceagents.models import Company, VoiceAgent

pytestmark = pytest.mark.django_db


def test_the_active_agent_is_read_whole_with_its_company_attached(django_assert_num_queries: Any) -> None:
    agent = VoiceAgentFactory(system_prompt="Be brief.", greeting_message="Hi!", vad_enabled=False)
    expected = VoiceAgent.objects.get(pk=agent.pk)
    with django_assert_num_queries(1):
        found = agent_active_for_company(agent_id=agent.pk, company=agent.company)
        assert found is not None and found.company is agent.company
    assert found.get_deferred_fields() == set()
    for field in VoiceAgent._meta.concrete_fields:
        assert getattr(found, field.attname) == getattr(expected, field.attname), field.name


def test_another_companys_inactive_or_unknown_agent_is_none() -> None:
    agent = VoiceAgentFactory()
    inactive = VoiceAgentFactory(company=agent.company, is_active=False)
    assert agent_active_for_company(agent_id=agent.pk, company=CompanyFactory()) is None
    assert agent_active_for_company(agent_id=inactive.pk, company=agent.company) is None
    assert agent_active_for_company(agent_id=2**62, company=agent.company) is None


def test_the_widget_key_finds_its_active_company_whole_and_nothing_else(django_assert_num_queries: Any) -> None:
    company = CompanyFactory(allowed_origins=["https://shop.example"], max_concurrent_sessions=7)
    expected = Company.objects.get(pk=company.pk)
    with django_assert_num_queries(1):
        found = company_by_widget_key(company.widget_key)
    assert found is not None and found.get_deferred_fields() == set()
    for field in Company._meta.concrete_fields:
        assert getattr(found, field.attname) == getattr(expected, field.attname), field.name
    assert company_by_widget_key(company.widget_key[:-1]) is None
    assert company_by_widget_key("' OR '1'='1") is None
    Company.objects.filter(pk=company.pk).update(is_active=False)
    assert company_by_widget_key(company.widget_key) is None

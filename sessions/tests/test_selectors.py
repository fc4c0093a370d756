"""Reads with a rule in them, against the real database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

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


def test_the_widget_key_finds_its_active_company_whole_and_nothing_else(
    django_assert_num_queries: Any,
) -> None:
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


def test_the_lookups_survive_a_column_added_meanwhile() -> None:
    """A migration that adds a column, run while web processes keep their prepared statements."""
    agent = VoiceAgentFactory()
    company = agent.company
    for _ in range(3):  # prepared from the second use (DATABASE_PREPARED_STATEMENTS)
        assert company_by_widget_key(company.widget_key) == company
        assert agent_active_for_company(agent_id=agent.pk, company=company) == agent
    with connection.cursor() as cursor:
        cursor.execute(
            "SET CONSTRAINTS ALL IMMEDIATE"
        )  # the factories' rows: checked now, so the table can change
        cursor.execute("ALTER TABLE companies ADD COLUMN added_by_a_later_release integer")
        cursor.execute("ALTER TABLE voice_agents ADD COLUMN added_by_a_later_release integer")
    assert company_by_widget_key(company.widget_key) == company
    assert agent_active_for_company(agent_id=agent.pk, company=company) == agent


def test_prepared_statements_can_be_turned_off_for_a_pooler(tmp_path: Path) -> None:
    code = (
        "import django, json; django.setup(); from django.conf import settings as s; "
        "print(json.dumps(s.DATABASES['default']['OPTIONS']))"
    )
    env = {**os.environ, "DATABASE_URL": "postgres://u@127.0.0.1:1/x", "PYTHONPATH": str(settings.BASE_DIR)}

    def options(**extra: str) -> dict[str, Any]:
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        found: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        return found

    on = options()
    assert on["server_side_binding"] is True and on["prepare_threshold"] == 2
    off = options(DATABASE_PREPARED_STATEMENTS="false")
    assert "server_side_binding" not in off and "prepare_threshold" not in off

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.factories import CompanyFactory, VoiceAgentFactory
from voiceagents.models import Company, VoiceAgent


@pytest.fixture
def company(db: Any) -> Company:
    return CompanyFactory()


@pytest.fixture
def agent(company: Company) -> VoiceAgent:
    return VoiceAgentFactory(company=company)


@pytest.fixture
def widget(company: Company) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_X_WIDGET_KEY=company.widget_key)
    return client


@pytest.fixture
def start_body(company: Company, agent: VoiceAgent) -> dict[str, Any]:
    return {"session_id": "visitor-1", "agent_id": agent.pk, "company_id": company.pk}

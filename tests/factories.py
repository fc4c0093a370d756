from __future__ import annotations

import factory

from voiceagents.catalog import AgentMode
from voiceagents.models import Company, VoiceAgent


class CompanyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Company

    name = factory.Sequence(lambda n: f"Company {n}")
    slug = factory.Sequence(lambda n: f"company-{n}")
    allowed_origins = factory.LazyFunction(lambda: ["https://shop.example.com"])
    max_concurrent_sessions = 10


class VoiceAgentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = VoiceAgent

    company = factory.SubFactory(CompanyFactory)
    name = factory.Sequence(lambda n: f"Agent {n}")
    mode = AgentMode.ONE_TO_ONE
    system_prompt = "You are a test agent."
    greeting_message = "Hello from the test agent."

"""Backchannels: "mhm", "yeah", "okay" said while the agent talks are listening, not a turn.

The session pauses the agent's voice on any speech and drops the reply once a
transcript arrives (livekit-agents' false-interruption handling). A backchannel
has a transcript too, so without this filter every "mhm" would cost the visitor
the rest of the answer. While a reply is unfinished (playing or paused), a
transcript made only of backchannel words is not passed on: no words arrive,
and the paused reply resumes after AGENT_FALSE_INTERRUPTION_TIMEOUT_SECONDS.
The same words when the agent is silent ("yeah" as an answer) pass unchanged.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator

from livekit import rtc
from livekit.agents import Agent, ModelSettings, stt

BACKCHANNEL_WORDS = frozenset(
    [
        "mhm",
        "mm",
        "mmm",
        "hmm",
        "hm",
        "uh-huh",
        "uhhuh",
        "uh",
        "huh",
        "um",
        "yeah",
        "yep",
        "yup",
        "yes",
        "ok",
        "okay",
        "right",
        "sure",
        "aha",
        "ah",
        "oh",
        "i",
        "see",
    ]
)
_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")


def is_backchannel(text: str) -> bool:
    """True for a short transcript of only backchannel words ("mhm", "uh huh", "yeah okay")."""
    words = _WORD.findall(text.lower())
    return 0 < len(words) <= 3 and all(w in BACKCHANNEL_WORDS for w in words)


def _reply_unfinished(agent: Agent) -> bool:
    speech = agent.session.current_speech
    return speech is not None and not speech.done() and not speech.interrupted


class BackchannelTolerantAgent(Agent):
    """The one-to-one agent: the framework's STT node, without backchannels over its replies."""

    async def stt_node(
        self, audio: AsyncIterable[rtc.AudioFrame], model_settings: ModelSettings
    ) -> AsyncIterator[stt.SpeechEvent | str]:
        async for event in Agent.default.stt_node(self, audio, model_settings):
            if (
                isinstance(event, stt.SpeechEvent)
                and event.type
                in (stt.SpeechEventType.FINAL_TRANSCRIPT, stt.SpeechEventType.INTERIM_TRANSCRIPT)
                and event.alternatives
                and is_backchannel(event.alternatives[0].text)
                and _reply_unfinished(self)
            ):
                continue
            yield event

"""A diagnostic responder in the LLM slot of the voice pipeline.

``EchoLLM`` is NOT an AI and must never be presented to a visitor as one. It answers
every turn with ``"You said: <what the STT heard>."`` (or the configured greeting while
the visitor has said nothing yet), so staff and tests can check the audio path end to
end (microphone -> STT -> "LLM" -> TTS -> speaker) without a model account, and can see
exactly what the STT understood.
"""

from __future__ import annotations

import asyncio
from typing import Any

from livekit.agents import APIConnectOptions, llm, utils
from livekit.agents.llm import ChatContext, Tool, ToolChoice
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr

DEFAULT_GREETING = "Hello. This is the echo diagnostic. Say something and I will repeat it."
DEFAULT_TEMPLATE = "You said: {text}."


class EchoLLM(llm.LLM):
    """Diagnostic stand-in for an LLM: repeats the last user message. Not an AI.

    ``greeting`` answers a turn that has no user message yet (the session's opening
    ``generate_reply``); ``template`` shapes the echo and must contain ``{text}``.
    """

    def __init__(self, *, greeting: str = DEFAULT_GREETING, template: str = DEFAULT_TEMPLATE) -> None:
        super().__init__()
        if "{text}" not in template:
            raise ValueError("the echo template must contain {text}")
        self._greeting = greeting or DEFAULT_GREETING
        self._template = template

    @property
    def model(self) -> str:
        return "echo"

    @property
    def provider(self) -> str:
        return "diagnostic"

    def reply_for(self, chat_ctx: ChatContext) -> str:
        """The text this responder gives for ``chat_ctx`` (what ``chat`` streams)."""
        for message in reversed(chat_ctx.messages()):
            if message.role != "user":
                continue
            text = (message.text_content or "").strip()
            if text:
                # the template supplies the full stop; don't double the STT's own
                return self._template.format(text=text.rstrip(" .!?"))
        return self._greeting

    def chat(
        self,
        *,
        chat_ctx: ChatContext,
        tools: list[Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> EchoLLMStream:
        return EchoLLMStream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)


class EchoLLMStream(llm.LLMStream):
    async def _run(self) -> None:
        assert isinstance(self._llm, EchoLLM)
        reply = self._llm.reply_for(self._chat_ctx)
        request_id = utils.shortuuid("echo_")
        # word by word, like a real model, so the TTS pipeline sees a stream
        words = reply.split(" ")
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            self._event_ch.send_nowait(
                llm.ChatChunk(id=request_id, delta=llm.ChoiceDelta(role="assistant", content=piece))
            )
            # yield so a consumer (and an interruption's cancel) interleaves with us
            await asyncio.sleep(0)
        prompt_words = sum(len((m.text_content or "").split()) for m in self._chat_ctx.messages())
        self._event_ch.send_nowait(
            llm.ChatChunk(
                id=request_id,
                usage=llm.CompletionUsage(
                    completion_tokens=len(words),
                    prompt_tokens=prompt_words,
                    total_tokens=len(words) + prompt_words,
                ),
            )
        )

"""The reply policy's reading of transcripts: names, questions, who a question is put to."""

from __future__ import annotations

import pytest

from voiceagents.worker.conference_policy import (
    ALWAYS,
    WHEN_ADDRESSED,
    ReplyPolicy,
    is_question,
    mentions,
    words,
)

NAMED = ReplyPolicy(WHEN_ADDRESSED, "Computer")


def test_always_answers_everything() -> None:
    assert ReplyPolicy(ALWAYS, "Computer").should_reply(
        "the weather is nice", agent_spoke_last=False, other_names=[]
    )


@pytest.mark.parametrize(
    "text",
    [
        "Computer, what's on the agenda",
        "hello computer",
        "HEY COMPUTER.",
        "ask the computer's opinion",
        "low computer",
    ],
)
def test_the_agents_name_anywhere_addresses_it(text: str) -> None:
    assert NAMED.should_reply(text, agent_spoke_last=False, other_names=["Maya"])


@pytest.mark.parametrize(
    "text", ["my train was late again", "computers are everywhere", "Maya, what do you think?"]
)
def test_talk_among_people_is_left_alone(text: str) -> None:
    assert not NAMED.should_reply(text, agent_spoke_last=False, other_names=["Maya", "Tom"])


def test_a_question_right_after_the_agent_spoke_is_put_to_it() -> None:
    assert NAMED.should_reply("and how long does it take", agent_spoke_last=True, other_names=["Maya"])
    assert NAMED.should_reply("it takes how long?", agent_spoke_last=True, other_names=["Maya"])
    # ... unless it names someone else in the room
    assert not NAMED.should_reply("Maya, how long does it take?", agent_spoke_last=True, other_names=["Maya"])
    # a statement after the agent spoke is not a question to it
    assert not NAMED.should_reply("that sounds right", agent_spoke_last=True, other_names=["Maya"])
    # a question after someone else spoke is not put to the agent
    assert not NAMED.should_reply("how long does it take", agent_spoke_last=False, other_names=["Maya"])


def test_multi_word_names_need_every_word_in_order() -> None:
    policy = ReplyPolicy(WHEN_ADDRESSED, "Support Bot")
    assert policy.should_reply("thanks support bot", agent_spoke_last=False, other_names=[])
    assert not policy.should_reply("I need support", agent_spoke_last=False, other_names=[])


def test_text_normalisation() -> None:
    assert words("Maya's  train, LATE!") == ["maya", "train", "late"]
    assert mentions(words("well, Tom said so"), "tom")
    assert not mentions(words("tomorrow"), "Tom")
    assert is_question("Where is it") and is_question("it is where?") and not is_question("here it is")

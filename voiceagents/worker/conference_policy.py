"""When a conference agent answers: `always`, or `when_addressed` (by name, or asked a question).

Pure functions over transcript text, so they are the same for every STT
strategy and easy to test. Speech-to-text output is messy: lower or upper
case, punctuation or none (pocketsphinx gives none), so text is normalised to
lowercase words first.

"A question put to it" is a heuristic, documented here because it decides when
the agent speaks up in a meeting: an utterance is a question when it ends with
"?" or starts with a question word (after lead-ins like "and", "so"); it is put to the agent when the agent
spoke last (the question follows its answer, as "and what about ...?" does)
and it names no one else in the room. Anything else needs the agent's name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ALWAYS = "always"
WHEN_ADDRESSED = "when_addressed"

QUESTION_WORDS = frozenset(
    [
        "what",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "how",
        "which",
        "can",
        "could",
        "would",
        "will",
        "should",
        "shall",
        "is",
        "are",
        "am",
        "was",
        "were",
        "do",
        "does",
        "did",
        "have",
        "has",
        "may",
        "might",
    ]
)

# words a spoken question often starts with before its question word ("and how ...")
LEAD_INS = frozenset(["and", "so", "but", "then", "okay", "ok", "well", "um", "uh", "oh", "hey", "also"])

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def words(text: str) -> list[str]:
    """Lowercase words; possessives folded ("Maya's" → "maya")."""
    return [w.removesuffix("'s") for w in _WORD.findall(text.lower().replace("’", "'"))]


def mentions(text_words: list[str], name: str) -> bool:
    """True when the words contain the name (all of its words, in order)."""
    wanted = words(name)
    if not wanted:
        return False
    n = len(wanted)
    return any(text_words[i : i + n] == wanted for i in range(len(text_words) - n + 1))


def is_question(text: str) -> bool:
    stripped = text.strip()
    if stripped.endswith("?"):
        return True
    found = words(stripped)
    while found and found[0] in LEAD_INS:
        found = found[1:]
    return bool(found) and found[0] in QUESTION_WORDS


@dataclass(frozen=True)
class ReplyPolicy:
    policy: str
    agent_name: str

    def should_reply(self, text: str, *, agent_spoke_last: bool, other_names: list[str]) -> bool:
        if self.policy != WHEN_ADDRESSED:
            return True
        return self.addressed(text, agent_spoke_last=agent_spoke_last, other_names=other_names)

    def addressed(self, text: str, *, agent_spoke_last: bool, other_names: list[str]) -> bool:
        found = words(text)
        if mentions(found, self.agent_name):
            return True
        if not (agent_spoke_last and is_question(text)):
            return False
        mine = set(words(self.agent_name))
        # "Tom, what do you think?" after the agent spoke is put to Tom, not to the agent
        return not any(mentions(found, other) for other in other_names if set(words(other)) - mine)

"""Who the conference agent listens to: every remote person's microphone, and nothing else.

The job connects with auto-subscribe off and subscribes here, track by track,
to the microphone of each remote participant that is a person. Never
subscribed: the agent's own tracks (a participant never receives its own),
other agents (participant kind AGENT), and anyone publishing on an agent's
behalf (avatar workers set `lk.publish_on_behalf`): hearing another voice of
the machine would make the agent answer itself.

Joins, leaves, unpublish/republish, lost subscriptions and name changes are
reported to the conference through callbacks; mutes need nothing, because
the mixer's clock turns a silent or stalled stream into silence.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from livekit import rtc
from livekit.agents.types import ATTRIBUTE_PUBLISH_ON_BEHALF

logger = logging.getLogger("agentconnect.worker.conference")

HEARD_SOURCES = (rtc.TrackSource.SOURCE_MICROPHONE, rtc.TrackSource.SOURCE_UNKNOWN)


@dataclass
class Member:
    identity: str
    name: str
    track_sid: str | None = None

    @property
    def display_name(self) -> str:
        return self.name or self.identity


def is_person(participant: rtc.RemoteParticipant) -> bool:
    if participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
        return False
    return not participant.attributes.get(ATTRIBUTE_PUBLISH_ON_BEHALF)


class Audience:
    def __init__(
        self,
        room: rtc.Room,
        *,
        on_audio: Callable[[Member, rtc.RemoteAudioTrack], None],
        on_audio_gone: Callable[[Member], None],
        on_left: Callable[[Member], None],
    ) -> None:
        self.room = room
        self.members: dict[str, Member] = {}
        self._on_audio = on_audio
        self._on_audio_gone = on_audio_gone
        self._on_left = on_left
        self._handlers: dict[str, Callable[..., None]] = {
            "participant_connected": self._participant_connected,
            "participant_disconnected": self._participant_disconnected,
            "track_published": self._track_published,
            "track_subscribed": self._track_subscribed,
            "track_unsubscribed": self._track_unsubscribed,
            "track_unpublished": self._track_unpublished,
            "track_muted": self._track_muted,
            "track_unmuted": self._track_unmuted,
            "participant_name_changed": self._name_changed,
        }

    def start(self) -> None:
        for event, handler in self._handlers.items():
            self.room.on(event, handler)  # type: ignore[arg-type]
        for participant in list(self.room.remote_participants.values()):
            self._participant_connected(participant)

    def stop(self) -> None:
        for event, handler in self._handlers.items():
            self.room.off(event, handler)  # type: ignore[arg-type]

    def name_of(self, identity: str) -> str:
        member = self.members.get(identity)
        return member.display_name if member else identity

    # --- room events ------------------------------------------------------------------

    def _participant_connected(self, participant: rtc.RemoteParticipant) -> None:
        if not is_person(participant):
            logger.debug("not listening to %s (an agent)", participant.identity)
            return
        member = self.members.setdefault(participant.identity, Member(participant.identity, participant.name))
        logger.info("%s (%s) joined the conference", member.display_name, member.identity)
        for publication in list(participant.track_publications.values()):
            if publication.track is not None and publication.subscribed:
                self._track_subscribed(publication.track, publication, participant)
            else:
                self._track_published(publication, participant)

    def _participant_disconnected(self, participant: rtc.RemoteParticipant) -> None:
        member = self.members.pop(participant.identity, None)
        if member is None:
            return
        logger.info("%s (%s) left the conference", member.display_name, member.identity)
        if member.track_sid is not None:
            member.track_sid = None
            self._on_audio_gone(member)
        self._on_left(member)

    def _hears(self, publication: rtc.TrackPublication, participant: rtc.RemoteParticipant) -> bool:
        return (
            participant.identity in self.members
            and publication.kind == rtc.TrackKind.KIND_AUDIO
            and publication.source in HEARD_SOURCES
        )

    def _track_published(
        self, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        if self._hears(publication, participant) and not publication.subscribed:
            publication.set_subscribed(True)

    def _track_subscribed(
        self, track: rtc.Track, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        if not self._hears(publication, participant) or not isinstance(track, rtc.RemoteAudioTrack):
            return
        member = self.members[participant.identity]
        if member.track_sid == publication.sid:
            return
        # one microphone per person: a new one (republished) replaces the old
        member.track_sid = publication.sid
        self._on_audio(member, track)

    def _track_unsubscribed(
        self, track: rtc.Track, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        self._track_gone(publication, participant)

    def _track_unpublished(
        self, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        self._track_gone(publication, participant)

    def _track_gone(self, publication: rtc.TrackPublication, participant: rtc.RemoteParticipant) -> None:
        member = self.members.get(participant.identity)
        if member is not None and member.track_sid == publication.sid:
            member.track_sid = None
            self._on_audio_gone(member)

    def _track_muted(self, participant: rtc.Participant, publication: rtc.TrackPublication) -> None:
        if participant.identity in self.members:
            logger.debug("%s muted", participant.identity)

    def _track_unmuted(self, participant: rtc.Participant, publication: rtc.TrackPublication) -> None:
        if participant.identity in self.members:
            logger.debug("%s unmuted", participant.identity)

    def _name_changed(self, participant: rtc.Participant, old_name: str, new_name: str) -> None:
        member = self.members.get(participant.identity)
        if member is not None:
            member.name = new_name

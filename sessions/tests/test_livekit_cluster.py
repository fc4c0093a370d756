"""The two-node rig itself: nodes on one Redis see each other's rooms."""

from __future__ import annotations

import pytest
from django.conf import settings

from sessions import livekit_gateway as lk
from tests.livekit_cluster import livekit_cluster


def test_two_nodes_on_one_redis_share_their_rooms(monkeypatch: pytest.MonkeyPatch) -> None:
    with livekit_cluster(webhook_port=9) as (node1, node2):
        monkeypatch.setattr(settings, "LIVEKIT_URL", node2.url)
        lk.room_ensure_with_dispatch(
            lk.RoomSpec(
                name="cluster-room",
                agent_name="nobody",
                metadata={},
                max_participants=2,
                empty_timeout=10,
                departure_timeout=5,
            )
        )
        monkeypatch.setattr(settings, "LIVEKIT_URL", node1.url)
        assert lk.rooms_existing(["cluster-room"]) == {"cluster-room"}
        assert [d.agent_name for d in lk.dispatches_for("cluster-room")] == ["nobody"]
        lk.room_close("cluster-room")
        monkeypatch.setattr(settings, "LIVEKIT_URL", node2.url)
        assert lk.rooms_existing(["cluster-room"]) == set()

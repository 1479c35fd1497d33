"""The agent's sync cycle draining a partition's backlog into a real ``brigade serve``: batches
grow to what the control plane advertises, every event is stored once and in order, and the
agent deletes only what the control plane acknowledged."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from edge_agent.clock import SystemClock
from edge_agent.executor import EventRecord
from edge_agent.links.control_plane import ControlPlaneClient
from edge_agent.store import Store
from edge_agent.sync import SyncCycle
from protocol.sync_api import MAX_SYNC_BATCH, MAX_SYNC_EVENTS, SyncRequest, SyncResponse
from tests.fixtures_cp import StartControlPlane
from tests.integration.test_cp_api import ready_kitchen
from tests.integration.test_cp_sync import enrollment_token

BACKLOG = 5000


@dataclass
class Recording:
    """The real client, noting how many events each request carried."""

    client: ControlPlaneClient
    sizes: list[int] = field(default_factory=list)

    def sync(self, request: SyncRequest) -> SyncResponse:
        self.sizes.append(len(request.events))
        return self.client.sync(request)


def test_a_backlog_drains_in_advertised_batches_each_event_stored_once(
    start_control_plane: StartControlPlane, tmp_path: Path
) -> None:
    """5,000 buffered device events: a first batch of 500, then batches above 500 up to the
    advertised maximum; the control plane's event log holds seqs 1..5,000 once each."""
    control_plane = start_control_plane()
    with ready_kitchen(control_plane) as admin:
        token = enrollment_token(admin)
    with ControlPlaneClient(control_plane.url) as enroller:
        identity = enroller.enroll(token=token, name="box-1", agent_version="0.1.0")
    status = [
        EventRecord(
            type="device.status",
            payload={"device_id": f"fridge-{n % 5}", "kind": "fridge", "status": "online"},
        )
        for n in range(BACKLOG)
    ]
    with (
        Store.open(tmp_path / "agent.db", boot_id="boot-1") as store,
        ControlPlaneClient(control_plane.url, credential=identity.credential) as client,
    ):
        store.append_events(events=status, occurred_at=time.time())
        link = Recording(client)
        cycle = SyncCycle(
            store=store,
            client=link,
            clock=SystemClock(),
            agent_id=identity.agent_id,
            kitchen_id=identity.kitchen_id,
            max_active_tasks=0,
        )
        deadline = time.monotonic() + 120
        while store.outbox_depth() and time.monotonic() < deadline:
            cycle.run_once()
        assert store.sequence() == (BACKLOG, BACKLOG)
    assert link.sizes[0] == MAX_SYNC_BATCH
    assert MAX_SYNC_BATCH < max(link.sizes) <= MAX_SYNC_EVENTS
    assert sum(link.sizes) == BACKLOG
    with sqlite3.connect(control_plane.db_path) as db:
        seqs = [
            row[0]
            for row in db.execute(
                "SELECT seq FROM events WHERE agent_id = ? ORDER BY seq", (identity.agent_id,)
            )
        ]
    assert seqs == list(range(1, BACKLOG + 1))

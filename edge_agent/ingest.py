"""The ingest loop: everything the device plane reports, checked, summarised and stored.

Links (MQTT, serial) never write to the store themselves: they :meth:`Ingest.submit` what they
decoded into a bounded queue and return at once, so a slow disk never stalls paho's network
thread or a serial reader. MQTT telemetry, nearly all of the traffic, is queued undecoded
(:meth:`Ingest.submit_raw`) and decoded here, a flush at a time, with the link's decoder.
One thread, ``brigade-ingest``, drains the queue every ``flush_s`` and, per flush:

* tracks device ``seq`` gaps (messages the broker dropped) and last-seen times;
* feeds temperatures to the :class:`~edge_agent.monitor.SafetyMonitor`; an alert is committed
  with its evidence (``synchronous=FULL``) in its own transaction;
* aggregates readings into per-window summaries and queues closed windows in the routine lane
  in one transaction (group commit: a power cut may lose the readings of the last
  ``flush_s``, the one weaker durability the agent accepts, and only for routine telemetry);
* records device status changes (``device.status`` in the priority lane), and changes of an
  online device's health (``degraded``/``failed``, :mod:`edge_agent.health`) the same way.

A full queue drops the reading and counts it (``queue_full``); status changes have their own
queue so a telemetry flood cannot push them out. The telemetry queue is a bare deque rather
than a :class:`queue.Queue`: nobody blocks on it (links never wait, the ingest thread wakes on
its timer), and its ``append`` and ``popleft`` are atomic, so producers take no lock (two links
racing for the last place may overshoot the bound by one).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter, deque
from dataclasses import dataclass

from edge_agent.clock import Clock
from edge_agent.executor import EventRecord
from edge_agent.health import HealthTracker
from edge_agent.monitor import Actions, SafetyMonitor
from edge_agent.readings import (
    CorrectiveAction,
    Observed,
    ProbeCheck,
    RawTelemetry,
    ReadingIn,
    SeqTracker,
    StatusSeen,
    WindowAggregator,
)
from edge_agent.safety import Evidence
from edge_agent.store import DeviceActivity, Store
from protocol import AlertRaised, EventType

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Heard:
    """What one flush heard from a device: its latest message, how many, the seq gaps."""

    link: str
    seen_at: float
    received: int = 0
    missed: int = 0


class Ingest:
    """The device plane's way into the store; see the module docstring."""

    def __init__(
        self,
        *,
        store: Store,
        monitor: SafetyMonitor,
        clock: Clock,
        window_s: float = 60.0,
        flush_s: float = 0.25,
        queue_size: int = 20_000,
        max_batch: int = 20_000,
    ) -> None:
        self.store = store
        self.monitor = monitor
        self.clock = clock
        self.flush_s = flush_s
        self.max_batch = max_batch
        self.queue_size = queue_size
        self.seqs = SeqTracker()
        self.health = HealthTracker()
        self.windows = WindowAggregator(window_s=window_s)
        #: Arrival order across links and kinds (a device's seq is checked in that order).
        self._observed: deque[Observed | RawTelemetry] = deque()
        #: Rare and precious (status changes, staff actions): a queue of their own.
        self._statuses: queue.Queue[StatusSeen | CorrectiveAction | ProbeCheck] = queue.Queue(
            maxsize=1000
        )
        self._urgent = threading.Event()
        self._counts_lock = threading.Lock()
        self.readings_ingested = 0
        self.dropped: Counter[str] = Counter()
        self.alerts_raised = 0
        #: Alerts (and clears) the monitor decided but the store did not commit (disk full,
        #: SQLITE_BUSY): the monitor will not decide them again, so they are re-applied on
        #: every flush and tick until they are on disk (``raise_alert`` is idempotent).
        self._retry_alerts: list[tuple[AlertRaised, list[Evidence], float]] = []
        self._retry_cleared: list[str] = []
        self._apply_lock = threading.Lock()

    # -- from the links (any thread) ----------------------------------------------------------

    def submit(self, item: Observed | StatusSeen | CorrectiveAction | ProbeCheck) -> bool:
        """Queue ``item`` without blocking; ``False`` (and counted) when the queue is full."""
        if isinstance(item, Observed):
            if len(self._observed) < self.queue_size:
                self._observed.append(item)
                return True
            self.count_drop("queue_full", len(item.readings) or 1)
            return False
        try:
            self._statuses.put_nowait(item)
        except queue.Full:
            self.count_drop("queue_full")
            return False
        self._urgent.set()  # a status change or a staff action is recorded at once
        return True

    def submit_raw(self, item: RawTelemetry) -> bool:
        """Queue an undecoded telemetry message (decoded by the next flush); ``False`` (and
        counted as one dropped reading: its readings are not known yet) when the queue is
        full."""
        if len(self._observed) < self.queue_size:
            self._observed.append(item)
            return True
        self.count_drop("queue_full")
        return False

    def count_drop(self, reason: str, n: int = 1) -> None:
        with self._counts_lock:
            self.dropped[reason] += n

    def counts(self) -> dict[str, object]:
        with self._counts_lock:
            return {
                "readings_ingested": self.readings_ingested,
                "dropped": dict(self.dropped),
                "alerts_raised": self.alerts_raised,
                "missed_messages": self.seqs.missed_total,
                "queue_depth": len(self._observed),
            }

    # -- the ingest thread --------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Flush every ``flush_s`` (at once when a status or staff action comes in) until
        ``stop``; a last flush closes every open window. ``stop`` is seen within ``flush_s``."""
        while not stop.is_set():
            self._urgent.wait(self.flush_s)
            self._urgent.clear()
            self._safe_flush(force=False)
        self._safe_flush(force=True)

    def _safe_flush(self, *, force: bool) -> None:
        try:
            self.flush(force=force)
        except Exception:
            # A bad batch must not end the thread: food-safety monitoring would stop silently.
            log.exception("ingest flush failed")

    def flush(self, *, force: bool = False) -> int:
        """Process what is queued now; returns how many readings were taken in."""
        now = self.clock.wall()
        actions = Actions()
        while True:
            try:
                status = self._statuses.get_nowait()
            except queue.Empty:
                break
            actions.extend(self._status(status))
        batch = self._take_batch()
        heard: dict[str, _Heard] = {}
        readings: list[ReadingIn] = []
        for queued in batch:
            if isinstance(queued, RawTelemetry):
                decoded = queued.decode(queued)
                if decoded is None:
                    continue  # dropped and counted by the link that received it
                item = decoded
            else:
                item = queued
            device = heard.get(item.device_id)
            if device is None:
                device = heard[item.device_id] = _Heard(item.link, item.at)
            else:
                device.link, device.seen_at = item.link, item.at
            device.received += 1
            if item.seq is not None:
                missed = self.seqs.observe(item.device_id, item.seq)
                if missed:
                    self.windows.add_missed(item.device_id, missed)
                    device.missed += missed
            if item.mode is not None or item.event is not None:
                self.health.observe(
                    item.device_id, at=item.at, received=0, mode=item.mode, event=item.event
                )
            readings += item.readings
        for reading in readings:
            self.windows.add(reading)
        actions.extend(self.monitor.on_readings(readings))
        taken = len(readings)
        self.apply(actions, at=now)
        summaries = self.windows.close(now=now, force=force)
        self.store.append_routine(
            events=[
                EventRecord(type=EventType.READINGS_SUMMARY.value, payload=s.payload())
                for s in summaries
            ],
            occurred_at=now,
        )
        self.store.record_device_activity(
            seen=[
                DeviceActivity(
                    device_id=device_id,
                    link=device.link,
                    seen_at=device.seen_at,
                    last_seq=self.seqs.last(device_id),
                    missed=device.missed,
                )
                for device_id, device in heard.items()
            ]
        )
        for device_id, device in heard.items():
            # One call per device and flush, not per message: telemetry floods come through here.
            self.health.observe(
                device_id, at=device.seen_at, received=device.received, missed=device.missed
            )
        for change in self.health.changes(now=now):
            self.store.record_device_health(
                device_id=change.device_id, health=change.health, reason=change.reason, at=now
            )
        with self._counts_lock:
            self.readings_ingested += taken
        return taken

    def _take_batch(self) -> list[Observed | RawTelemetry]:
        """Up to ``max_batch`` queued messages, oldest first; the rest wait for the next flush."""
        queued = self._observed
        take = queued.popleft  # atomic: links keep appending meanwhile
        return [take() for _ in range(min(len(queued), self.max_batch))]

    def apply(self, actions: Actions, *, at: float) -> None:
        """Persist the monitor's decisions: each alert with its evidence, then the rest.

        An alert or clear whose write fails is kept and re-applied on the next call; only a
        committed alert counts as raised.
        """
        with self._apply_lock:
            alerts = [*self._retry_alerts, *((a, p, at) for a, p in actions.alerts)]
            cleared = [*self._retry_cleared, *actions.cleared]
            self._retry_alerts, self._retry_cleared = [], []
            for alert, proof, raised_at in alerts:
                try:
                    self._raise(alert, proof, raised_at)
                except Exception:
                    log.exception("food-safety alert not stored; retrying next tick")
                    self._retry_alerts.append((alert, proof, raised_at))
            pending = {alert.alert_id for alert, _, _ in self._retry_alerts}
            for alert_id in cleared:
                if alert_id in pending:
                    self._retry_cleared.append(alert_id)  # cleared only after it was raised
                    continue
                try:
                    self.store.clear_alert(alert_id=alert_id, at=at)
                except Exception:
                    log.exception("alert clear not stored; retrying next tick")
                    self._retry_cleared.append(alert_id)
            self.store.record_evidence(readings=actions.evidence, at=at)

    def retry_pending(self) -> int:
        """Alerts and clears still waiting for a successful write."""
        with self._apply_lock:
            return len(self._retry_alerts) + len(self._retry_cleared)

    def _raise(self, alert: AlertRaised, proof: list[Evidence], at: float) -> None:
        if self.store.raise_alert(alert=alert, at=at, evidence=proof) is None:
            return  # already on disk (a retry of a write that did commit)
        with self._counts_lock:
            self.alerts_raised += 1
        log.warning(
            "food-safety alert raised",
            extra={
                "alert_id": alert.alert_id,
                "kind": alert.kind,
                "severity": alert.severity,
                "device_id": alert.device_id,
            },
        )

    def _status(self, seen: StatusSeen | CorrectiveAction | ProbeCheck) -> Actions:
        if isinstance(seen, ProbeCheck):
            return self.monitor.on_probe_check(
                device_id=seen.device_id,
                probe=seen.probe,
                reading_c=seen.reading_c,
                reference_c=seen.reference_c,
                badge=seen.badge,
                at=seen.at,
            )
        if isinstance(seen, CorrectiveAction):
            if (
                self.store.record_corrective_action(
                    alert_id=seen.alert_id, action=seen.action, acted_by=seen.badge, at=seen.at
                )
                is None
            ):
                self.count_drop("unknown_alert")
            return Actions()
        if seen.online is None:
            self.store.record_birth(
                device_id=seen.device_id,
                link=seen.link,
                kind=seen.kind,
                model=seen.model or "",
                firmware=seen.firmware or "",
                at=seen.at,
            )
            return Actions()
        self.store.record_device_status(
            device_id=seen.device_id,
            link=seen.link,
            status="online" if seen.online else "offline",
            at=seen.at,
            kind=seen.kind,
        )
        self.health.online(seen.device_id, seen.online)
        return self.monitor.on_device_status(seen.device_id, online=seen.online, at=seen.at)

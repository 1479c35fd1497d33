"""Wiring: the store, the MQTT link, the control-plane client and one named thread per role.

* ``brigade-sync``: sync round trips every ``sync_interval_s``; jittered backoff (honouring
  ``Retry-After``) while the control plane is unreachable or overloaded; the kitchen keeps
  cooking meanwhile.
* ``brigade-doorbell``: holds the control plane's work doorbell open on its own event loop
  (:class:`edge_agent.sync.DoorbellWatch`) and wakes ``brigade-sync`` the moment there is new
  work, so an order starts within a fraction of a second instead of up to an interval later.
* ``brigade-executor``: feeds acks, staff confirmations and time to the pure
  :func:`edge_agent.executor.decide`, persists each decision and only then sends its command.
* ``brigade-ingest``: telemetry, device status and probe readings into the store, through the
  food-safety monitor (:mod:`edge_agent.ingest`); ``brigade-serial-N``: one per serial port.
* apscheduler's thread: food-safety timers (delays, silent probes, devices offline) and the
  disk budget.
* ``brigade-metrics``: local ``/metrics`` and ``/healthz``.
* paho's own loop thread (``loop_start``) runs the MQTT connection.

>>> agent = Agent(config)  # doctest: +SKIP
>>> agent.run(stop_event)  # doctest: +SKIP  (returns after stop_event is set, all closed)
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import httpx
from apscheduler.schedulers.background import BackgroundScheduler

from edge_agent.backoff import Backoff
from edge_agent.clock import Clock, SystemClock
from edge_agent.config import AgentConfig
from edge_agent.errors import AgentError, AlreadyRunning, CredentialRejected, RetryLater
from edge_agent.executor import (
    Decision,
    ExecutorSettings,
    Inputs,
    RunState,
    StaffConfirmation,
    StepPhase,
    TaskRun,
    decide,
    is_manual,
)
from edge_agent.ingest import Ingest
from edge_agent.links.control_plane import ControlPlaneClient, WorkDoorbellClient
from edge_agent.links.mqtt import CommandLink, Inbound, MqttLink
from edge_agent.links.serial import SerialLink
from edge_agent.metrics import MetricsServer
from edge_agent.monitor import RULE_PACKS, Actions, SafetyMonitor
from edge_agent.store import ActiveTask, Store, read_boot_id
from edge_agent.sync import DoorbellWatch, SyncCycle
from protocol import Ack, DeviceEvent, EventType

log = logging.getLogger(__name__)

#: Name of the single-instance lock file in the data directory.
LOCK_FILE = "agent.lock"


def lock_data_dir(data_dir: Path) -> IO[str]:
    """Take the data directory's instance lock (``flock``, released when the process exits);
    raises :class:`AlreadyRunning` when another agent holds it. Keep the returned file open."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE
    handle = path.open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise AlreadyRunning(
            f"another brigade-agent (pid {holder}) is already running on {data_dir} "
            f"(lock {path}); stop it first, or give this one its own --data-dir"
        ) from exc
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


#: Longest the executor sleeps without looking at its tasks (new leases arrive via the store).
EXECUTOR_TICK_S = 0.2
#: Bound of the queue from the MQTT link to the executor.
INBOX_SIZE = 1000
#: Shortest time between two syncs in a row that the work doorbell asked for: a kitchen taking
#: orders in a burst syncs ten times a second at most, not once per order. (The first ring
#: after a routine sync is answered at once.)
RUNG_SYNC_GAP_S = 0.1


def settings_from(config: AgentConfig) -> ExecutorSettings:
    return ExecutorSettings(
        ack_wait_s=config.ack_wait_s,
        step_margin_s=config.step_margin_s,
        manual_margin_s=config.manual_margin_s,
    )


@dataclass
class Executor:
    """Runs the pure state machine over every active task and applies its decisions."""

    store: Store
    link: CommandLink
    settings: ExecutorSettings
    clock: Clock
    #: Called after a ``task.step_done`` is on disk (the cook-step core-temperature check).
    on_step_done: Callable[[ActiveTask, dict[str, Any]], None] | None = None

    def __post_init__(self) -> None:
        # Timers (``TaskRun.deadline``) live only in memory; the store has everything else.
        self._deadlines: dict[tuple[str, int], float | None] = {}

    def step(self, inbound: Inbound | None, online: dict[str, tuple[str, ...]]) -> float | None:
        """Advance every active task once; returns the earliest monotonic time to look again."""
        tasks = self.store.active_tasks()
        live = {(t.run.task_id, t.run.fencing_token) for t in tasks}
        for key in list(self._deadlines):
            if key not in live:
                del self._deadlines[key]
        # The latest run of every task, updated as decisions are taken in this pass, so two
        # tasks deciding in the same pass can never both claim the same free device.
        current = {(t.run.task_id, t.run.fencing_token): t.run for t in tasks}
        wake: float | None = None
        for task in tasks:
            key = (task.run.task_id, task.run.fencing_token)
            busy = {
                run.device_id
                for other, run in current.items()
                if other != key
                and run.state == RunState.STARTED
                and run.device_id is not None
                and run.phase in (StepPhase.COMMANDED, StepPhase.ACCEPTED)
            }
            decision = self._advance(task, busy, inbound, online)
            if decision is None:
                continue
            current[key] = decision.run
            if decision.wake_at is not None:
                wake = decision.wake_at if wake is None else min(wake, decision.wake_at)
        return wake

    def _advance(
        self,
        task: ActiveTask,
        busy: set[str],
        inbound: Inbound | None,
        online: dict[str, tuple[str, ...]],
    ) -> Decision | None:
        key = (task.run.task_id, task.run.fencing_token)
        run = replace(task.run, deadline=self._deadlines.get(key))
        free = {kind: tuple(d for d in ids if d not in busy) for kind, ids in online.items()}
        link_up = self.link.connected
        if not link_up:
            # With the broker gone no device can be reached; never start into the void.
            free = {}
        ack = inbound if isinstance(inbound, Ack) else None
        confirmation = _confirmation(inbound) if isinstance(inbound, DeviceEvent) else None
        mine = confirmation is not None and (confirmation.task_id, confirmation.step) == (
            run.task_id,
            run.step,
        )
        if not mine and run.state == RunState.STARTED and _is_manual_step(task, run):
            # Confirmations are persisted by the MQTT link (possibly before this step began).
            badge = self.store.confirmation(task_id=run.task_id, step=run.step)
            if badge is not None:
                confirmation = StaffConfirmation(task_id=run.task_id, step=run.step, badge=badge)
        inputs = Inputs(
            now=self.clock.monotonic(),
            wall=self.clock.wall(),
            free_devices=free,
            ack=ack,
            confirmation=confirmation,
            link_up=link_up,
            online=frozenset(d for ids in online.values() for d in ids),
        )
        decision = decide(run, task.record, inputs, self.settings)
        if decision.run != run:
            applied = self.store.apply_transition(
                run=decision.run,
                events=decision.events,
                occurred_at=inputs.wall,
                expected_state=task.run.state,
                start_deadline=task.record.start_deadline,
                monotonic=self.clock.monotonic,
            )
            if applied is None:
                log.info("task changed under the executor; skipped", extra={"task_id": key[0]})
                return None
            for event in decision.events:
                log.info("event recorded", extra={"task_id": key[0], "event_type": event.type})
                if event.type == EventType.STEP_DONE and self.on_step_done is not None:
                    self.on_step_done(task, event.payload)
        self._deadlines[key] = decision.run.deadline
        # The decision is on disk; only now may the device act on it.
        if decision.command is not None:
            sent = self.link.publish_command(decision.command.device_id, decision.command.command)
            log.info(
                "command sent" if sent else "command queued while the broker is unreachable",
                extra={
                    "task_id": key[0],
                    "command_id": decision.command.command.command_id,
                    "device_id": decision.command.device_id,
                },
            )
        return decision


def _is_manual_step(task: ActiveTask, run: TaskRun) -> bool:
    steps = task.record.lease.steps
    return 0 <= run.step < len(steps) and is_manual(steps[run.step])


def persist_confirmation(store: Store, clock: Clock, event: DeviceEvent) -> None:
    """The MQTT link's hook: a ``step_confirmed`` event on disk before it is acknowledged."""
    confirmation = _confirmation(event)
    if confirmation is not None:
        store.record_confirmation(
            task_id=confirmation.task_id,
            step=confirmation.step,
            badge=confirmation.badge,
            at=clock.wall(),
        )


def _confirmation(event: DeviceEvent) -> StaffConfirmation | None:
    task_id, step, badge = (event.data.get(k) for k in ("task_id", "step", "badge"))
    if not isinstance(task_id, str) or not isinstance(badge, str) or isinstance(step, bool):
        return None
    if not isinstance(step, int | float) or int(step) != step:
        return None
    return StaffConfirmation(task_id=task_id, step=int(step), badge=badge)


class Agent:
    """One running edge agent; :meth:`run` blocks until ``stop`` is set, then closes everything.

    While it runs, :attr:`state` holds the live parts (store, links, ingest) for the local
    ``/metrics`` and ``/healthz`` endpoint and for tests.
    """

    def __init__(
        self,
        config: AgentConfig,
        *,
        transport: httpx.BaseTransport | None = None,
        clock: Clock | None = None,
        boot_id: str | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self._transport = transport
        self._boot_id = boot_id or read_boot_id()
        self._inbox: queue.Queue[Inbound] = queue.Queue(maxsize=INBOX_SIZE)
        #: Set by the sync loop when new leases arrived: the executor looks at once.
        self._wake_executor = threading.Event()
        #: Set by the work doorbell (and at stop): the sync loop syncs without waiting its delay.
        self._work_rang = threading.Event()
        #: Stops the doorbell's event loop from another thread (set once that loop runs).
        self._halt_doorbell: Callable[[], None] | None = None
        self.link: MqttLink | None = None
        self.serial_links: list[SerialLink] = []
        self.ingest: Ingest | None = None
        self.store: Store | None = None
        self.sync_ok = threading.Event()
        self.sync_cycle: SyncCycle | None = None
        self.last_sync_ok_mono: float | None = None
        self.metrics_port: int | None = None
        #: Set once every part runs (store open, links started, threads and jobs up).
        self.ready = threading.Event()

    def link_states(self) -> dict[str, str]:
        """``up``/``down`` per link: mqtt, control_plane and each serial port."""
        states = {
            "mqtt": "up" if self.link is not None and self.link.connected else "down",
            "control_plane": "up" if self.sync_ok.is_set() else "down",
        }
        if self.sync_cycle is not None and self.sync_cycle.stalled is not None:
            states["control_plane"] = self.sync_cycle.stalled
        for n, serial_link in enumerate(self.serial_links):
            states[f"serial{n}"] = serial_link.state
        return states

    def run(self, stop: threading.Event) -> None:
        config = self.config
        # Two agents on one store would both run the executor and both send commands.
        instance_lock = lock_data_dir(config.data_dir)
        try:
            self._run(stop)
        finally:
            instance_lock.close()

    def _run(self, stop: threading.Event) -> None:
        config = self.config
        store = Store.open(config.db_path, boot_id=self._boot_id)
        self.store = store
        client = ControlPlaneClient(
            config.control_plane_url,
            credential=config.credential.get_secret_value(),
            transport=self._transport,
        )
        monitor = SafetyMonitor(
            pack=RULE_PACKS[config.rule_pack],
            kind_of=self._kind_of,
            overrides=config.safety_overrides,
            offline_alert_s=config.device_offline_alert_s,
            placements=config.probe_placements,
        )
        monitor.seed_open_alerts(a["alert_id"] for a in store.alerts(open_only=True))
        ingest = Ingest(
            store=store,
            monitor=monitor,
            clock=self.clock,
            window_s=config.readings_window_s,
            flush_s=config.ingest_flush_s,
        )
        self.ingest = ingest
        link = MqttLink(
            agent_id=config.agent_id,
            kitchen_id=config.kitchen_id,
            host=config.mqtt_host,
            port=config.mqtt_port,
            inbox=self._inbox,
            sink=ingest,
            confirm=lambda event: persist_confirmation(store, self.clock, event),
        )
        self.link = link
        self.serial_links = [
            SerialLink(
                path=port.path, baudrate=port.baudrate, configure=port.configure, sink=ingest
            )
            for port in config.serial_ports
        ]
        scheduler = BackgroundScheduler(timezone="UTC")
        threads: list[threading.Thread] = []
        metrics: MetricsServer | None = None
        try:
            link.start()
            cycle = SyncCycle(
                store=store,
                client=client,
                clock=self.clock,
                agent_id=config.agent_id,
                kitchen_id=config.kitchen_id,
                max_active_tasks=config.max_active_tasks,
                link_states=self.link_states,
                can_take_leases=lambda: link.connected,
                forward_routine=config.forward_readings,
            )
            self.sync_cycle = cycle
            executor = Executor(
                store=store,
                link=link,
                settings=settings_from(config),
                clock=self.clock,
                on_step_done=lambda task, payload: self._check_cook(ingest, monitor, task, payload),
            )
            threads = [
                threading.Thread(
                    target=self._sync_loop, args=(cycle, stop), name="brigade-sync", daemon=True
                ),
                threading.Thread(
                    target=self._executor_loop,
                    args=(executor, link, stop),
                    name="brigade-executor",
                    daemon=True,
                ),
                threading.Thread(
                    target=ingest.run, args=(stop,), name="brigade-ingest", daemon=True
                ),
                *(
                    [
                        threading.Thread(
                            target=self._doorbell_loop,
                            args=(lambda: link.connected, stop),
                            name="brigade-doorbell",
                            daemon=True,
                        )
                    ]
                    if self._doorbell_on()
                    else []
                ),
                *(
                    threading.Thread(
                        target=serial_link.run,
                        args=(stop,),
                        name=f"brigade-serial-{n}",
                        daemon=True,
                    )
                    for n, serial_link in enumerate(self.serial_links)
                ),
            ]
            for thread in threads:
                thread.start()
            # Timers of the food-safety rules and the disk budget: apscheduler jobs that never
            # overlap themselves and skip missed runs rather than pile them up.
            scheduler.add_job(
                lambda: ingest.apply(monitor.tick(self.clock.wall()), at=self.clock.wall()),
                "interval",
                seconds=config.safety_tick_s,
                id="food-safety-timers",
                max_instances=1,
                coalesce=True,
            )
            budget_bytes = int(config.disk_budget_mb * 1024 * 1024)
            scheduler.add_job(
                lambda: store.enforce_disk_budget(budget_bytes=budget_bytes),
                "interval",
                seconds=10,
                id="disk-budget",
                max_instances=1,
                coalesce=True,
            )
            scheduler.start()
            if config.metrics_port is not None:
                metrics = MetricsServer.start_for(self, config.metrics_host, config.metrics_port)
                self.metrics_port = metrics.port if metrics is not None else None
            log.info(
                "agent running",
                extra={"agent_id": config.agent_id, "kitchen_id": config.kitchen_id},
            )
            self.ready.set()
            stop.wait()
        finally:
            stop.set()
            self._work_rang.set()  # the sync loop may be waiting on it rather than on stop
            halt = self._halt_doorbell
            if halt is not None:
                halt()
            if scheduler.running:
                scheduler.shutdown(wait=True)
            if metrics is not None:
                metrics.stop()
            for thread in threads:
                thread.join(timeout=15)
            link.stop()
            client.close()
            store.close()
            log.info("agent stopped")

    def _kind_of(self, device_id: str) -> str | None:
        if self.link is not None:
            kind = self.link.registry.kind_of(device_id)
            if kind is not None:
                return kind
        if any(device_id in s.probes() for s in self.serial_links):
            return "probe"
        return None

    def _check_cook(
        self, ingest: Ingest, monitor: SafetyMonitor, task: ActiveTask, payload: dict[str, object]
    ) -> None:
        """A finished machine step's core temperature against the recipe's minimum."""
        step_index = payload.get("step")
        steps = task.record.lease.steps
        if not isinstance(step_index, int) or not 0 <= step_index < len(steps):
            return
        core = payload.get("core_temp_c")
        device = payload.get("device_id")
        alert = monitor.check_cook_step(
            device_id=device if isinstance(device, str) else None,
            core_temp_c=float(core) if isinstance(core, int | float) else None,
            min_core_temp_c=steps[step_index].min_core_temp_c,
            at=self.clock.wall(),
            task_id=task.run.task_id,
            step=step_index,
        )
        if alert is not None:
            # Through the ingest's retry list: a failed write is re-applied on the next tick.
            ingest.apply(Actions(alerts=[(alert, [])]), at=self.clock.wall())

    def _doorbell_on(self) -> bool:
        """Whether to hold the work doorbell: on unless the config turns it off or a transport
        given (by a test) cannot serve its async client."""
        transport = self._transport
        if transport is not None and not isinstance(transport, httpx.AsyncBaseTransport):
            log.info("work doorbell off: the control-plane transport given is not async")
            return False
        return self.config.work_doorbell

    def _doorbell_loop(self, can_take_leases: Callable[[], bool], stop: threading.Event) -> None:
        """Thread ``brigade-doorbell``: a :class:`DoorbellWatch` on an event loop of its own."""
        try:
            asyncio.run(self._watch_doorbell(can_take_leases, stop))
        except Exception:
            # Doorbell or not, syncs go on at the interval: log it and let the thread end.
            log.exception("work doorbell stopped")

    async def _watch_doorbell(
        self, can_take_leases: Callable[[], bool], stop: threading.Event
    ) -> None:
        config = self.config
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()

        def halt() -> None:
            with contextlib.suppress(RuntimeError):  # the loop has already closed
                loop.call_soon_threadsafe(stopped.set)

        self._halt_doorbell = halt
        if stop.is_set():  # stopped before ``halt`` could be called
            stopped.set()
        transport = self._transport
        async with WorkDoorbellClient(
            config.control_plane_url,
            credential=config.credential.get_secret_value(),
            transport=transport if isinstance(transport, httpx.AsyncBaseTransport) else None,
        ) as client:
            watch = DoorbellWatch(
                link=client,
                clock=self.clock,
                wake_sync=self._work_rang.set,
                interval_s=config.sync_interval_s,
                wait_s=config.doorbell_wait_s,
                backoff_cap_s=config.sync_backoff_cap_s,
                can_take_leases=can_take_leases,
            )
            await watch.run(stopped)

    def _sync_loop(self, cycle: SyncCycle, stop: threading.Event) -> None:
        backoff = Backoff(base_s=1.0, cap_s=self.config.sync_backoff_cap_s)
        rung = False  # whether the doorbell asked for the sync about to run
        while not stop.is_set():
            # Whatever rang before this sync starts is seen by it.
            self._work_rang.clear()
            try:
                outcome = cycle.run_once()
            except RetryLater as exc:
                self.sync_ok.clear()
                delay = backoff.next_delay(floor_s=exc.delay_s)
                log.warning("control plane overloaded", extra={"retry_in_s": round(delay, 2)})
            except CredentialRejected as exc:
                self.sync_ok.clear()
                delay = backoff.next_delay()
                log.error(str(exc), extra={"retry_in_s": round(delay, 2)})
            except AgentError as exc:
                self.sync_ok.clear()
                delay = backoff.next_delay()
                log.warning("sync failed", extra={"error": str(exc), "retry_in_s": round(delay, 2)})
            except Exception:
                # A bug must not end the sync thread: the kitchen would silently go dark.
                self.sync_ok.clear()
                delay = backoff.next_delay()
                log.exception("unexpected sync error")
            else:
                self.sync_ok.set()
                self.last_sync_ok_mono = self.clock.monotonic()
                backoff.reset()
                delay = outcome.delay_s(self.config.sync_interval_s)
                if outcome.new_leases:
                    self._wake_executor.set()
                rung = self._until_next_sync(stop, delay, after_rung=rung)
                continue
            # A failed sync waits out its backoff: the doorbell never shortens it.
            rung = False
            stop.wait(delay)

    def _until_next_sync(self, stop: threading.Event, delay_s: float, *, after_rung: bool) -> bool:
        """Wait ``delay_s`` after a good sync, or less once the work doorbell rings; returns
        whether it rang. A ring right after a sync the doorbell asked for waits out
        :data:`RUNG_SYNC_GAP_S` from that sync."""
        # Real time, like the waits themselves (the agent's clock may be a test's fake).
        synced = time.monotonic()
        if delay_s <= 0:
            return False
        if not self._work_rang.wait(delay_s) or stop.is_set():
            return False
        rest = RUNG_SYNC_GAP_S - (time.monotonic() - synced)
        if after_rung and rest > 0:
            stop.wait(rest)
        return True

    def _next_inbound(self, timeout: float) -> Inbound | None:
        """The next ack or confirmation within ``timeout``; returns early (``None``) when the
        sync loop signals new leases, so a lease starts without waiting out a tick."""
        deadline = self.clock.monotonic() + timeout
        while True:
            if self._wake_executor.is_set():
                self._wake_executor.clear()
                return None
            remaining = deadline - self.clock.monotonic()
            if remaining <= 0:
                return None
            try:
                return self._inbox.get(timeout=min(remaining, 0.02))
            except queue.Empty:
                continue

    def _executor_loop(self, executor: Executor, link: MqttLink, stop: threading.Event) -> None:
        wake: float | None = None
        while not stop.is_set():
            timeout = EXECUTOR_TICK_S
            if wake is not None:
                timeout = max(0.0, min(timeout, wake - self.clock.monotonic()))
            inbound = self._next_inbound(timeout)
            try:
                wake = executor.step(inbound, link.registry.online_by_kind())
            except AgentError as exc:
                log.error("executor step failed", extra={"error": str(exc)})
                stop.wait(1.0)
            except Exception:
                log.exception("unexpected executor error")
                stop.wait(1.0)

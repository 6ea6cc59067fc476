"""How the container runs a Dagster service: as a child process group whose output is relayed
as Cloud Logging JSON, stopped within Cloud Run's grace period, and, for the daemon, one at a
time.

- **Process group.** The service (`dagster-daemon run`, our webserver) starts the code servers
  and, through them, the run workers. They all share the child's process group, so a stop
  reaches every one of them; signalling the service alone leaves the code server and its runs
  orphaned, holding the relay's pipe open (the wrapper would outlive Cloud Run's grace period).
- **Grace period.** Cloud Run sends SIGTERM, then SIGKILL 10 s later. The group gets SIGTERM:
  the daemon stops launching, run workers fail their runs as interrupted (run retries launch
  them again); whatever still runs after `GRACE_SECONDS` is killed, and the command exits 0. A
  run killed before it could report is found dead by run monitoring (`run_launcher.py`).
- **One daemon.** Dagster supports exactly one daemon per instance: two schedulers would both
  launch a tick, two queue daemons both launch a queued run. A rollout starts the new daemon
  before the old one stops, so the daemon runs only while holding a PostgreSQL advisory lock
  (`LeaderLock`); the next one waits for it, and the server releases it when the holder's
  session ends, however it ends.

Nothing here imports Dagster: the wrapper's own memory stays small (benchmarks/memory.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Literal

import psycopg2
from psycopg2.extensions import connection as Connection

from observing_pipelines.db.connection import APPLICATION_NAME, AdvisoryLock
from observing_pipelines.log_relay import relay_process_logs

log = logging.getLogger(__name__)

GRACE_SECONDS = 7.0
"""From SIGTERM to SIGKILL of the group; the command is gone well inside Cloud Run's 10 s."""
EXIT_GRACE_SECONDS = 1.5
"""After the SIGKILL, how long the relay may still drain output before the command exits."""

LOCK_POLL_SECONDS = 2.0
LOCK_CHECK_SECONDS = 10.0
LOCK_LOST_GRACE_SECONDS = 60.0
"""How long the database may stay unreachable (a restart, a failover) before the daemon stops:
while nobody can reach it, no second daemon can take the lock either."""


class LeaderLock:
    """A session-level advisory lock on its own connection: held while that session lives.

    The session asks the server to probe its peer (TCP keepalives every few seconds), so a
    holder whose container vanished without closing its connection loses the lock within
    about half a minute instead of the kernel's two hours.
    """

    def __init__(self, url: str, key: int = AdvisoryLock.DAEMON_LEADER) -> None:
        self.url = url
        self.key = int(key)
        self._conn: Connection | None = None

    def acquire(self, stopping: threading.Event) -> bool:
        """Wait until the lock is ours (True) or a stop is asked for (False)."""
        waiting_logged = False
        while not stopping.is_set():
            try:
                if self._try():
                    log.info("Holding the daemon lock; starting the daemon")
                    return True
                if not waiting_logged:
                    log.info("Another daemon holds the lock (%s); waiting for it", self._holder())
                    waiting_logged = True
            except psycopg2.Error as error:
                self._close()
                log.warning("Cannot take the daemon lock yet: %s", _first_line(error))
            stopping.wait(LOCK_POLL_SECONDS)
        return False

    def check(self) -> Literal["held", "taken", "unreachable"]:
        """Whether the lock is still ours: after a lost session, it is taken again if nobody
        else holds it ("held"), or it is another daemon's ("taken"), or the database cannot be
        reached to tell ("unreachable")."""
        try:
            if self._conn is not None and not self._conn.closed:
                with self._conn.cursor() as cur:
                    cur.execute("SELECT 1")
                return "held"
        except psycopg2.Error as error:
            log.warning("The daemon lock's session is gone: %s", _first_line(error))
        self._close()
        try:
            return "held" if self._try() else "taken"
        except psycopg2.Error:
            self._close()
            return "unreachable"

    def release(self) -> None:
        self._close()

    def _try(self) -> bool:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg2.connect(
                self.url,
                application_name=f"{APPLICATION_NAME} daemon lock {socket.gethostname()}",
                connect_timeout=10,
                keepalives=1,
                keepalives_idle=10,
                keepalives_interval=5,
                keepalives_count=3,
            )
            self._conn.autocommit = True
            with self._conn.cursor() as cur:
                cur.execute(
                    "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; "
                    "SET tcp_keepalives_count = 3"
                )
        with self._conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(%s)", (self.key,))
            row = cur.fetchone()
        return bool(row and row[0])

    def _holder(self) -> str:
        """Who holds the lock, as far as this role may see (application name, since when)."""
        assert self._conn is not None
        with self._conn.cursor() as cur:
            cur.execute(
                """
                SELECT a.application_name, a.backend_start FROM pg_locks l
                JOIN pg_stat_activity a ON a.pid = l.pid
                WHERE l.locktype = 'advisory' AND l.granted AND l.database = (
                    SELECT oid FROM pg_database WHERE datname = current_database())
                  AND (l.classid::bigint << 32) + l.objid::bigint = %s
                """,
                (self.key,),
            )
            row = cur.fetchone()
        return f"{row[0]} since {row[1]:%Y-%m-%d %H:%M:%S}" if row else "holder not visible"

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg2.Error):
                self._conn.close()
            self._conn = None


def supervise(command: list[str], process: str, lock: LeaderLock | None = None) -> int:
    """Run `command` as a process group until it ends or Cloud Run stops us; return the exit
    code: 0 after a requested stop, else the service's own (1 if the daemon lost its lock)."""
    stopping = threading.Event()
    lost_lock = threading.Event()
    relayed = threading.Event()
    child: subprocess.Popen[str] | None = None

    def stop(reason: str) -> None:
        if stopping.is_set():
            return
        stopping.set()
        if child is not None:
            log.info("Stopping the %s (%s)", process, reason)
            threading.Thread(target=_stop_group, args=(child, relayed), daemon=True).start()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop(signal.Signals(signum).name)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    if lock is not None and not lock.acquire(stopping):
        return 0
    child = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,  # its own process group: code servers and run workers too
    )
    if stopping.is_set():  # a signal came while the child was starting
        threading.Thread(target=_stop_group, args=(child, relayed), daemon=True).start()
    if lock is not None:
        threading.Thread(
            target=_watch_lock, args=(lock, stopping, lost_lock, stop), daemon=True
        ).start()
    assert child.stdout is not None
    relay_process_logs(child.stdout, sys.stdout, process)
    relayed.set()
    code = child.wait()
    if lock is not None:
        lock.release()
    if lost_lock.is_set():
        return 1
    return 0 if stopping.is_set() else code


def _stop_group(child: subprocess.Popen[str], relayed: threading.Event) -> None:
    """SIGTERM to the group, SIGKILL to what is left after the grace period, and, should a
    process that escaped the group still hold the relay's pipe, exit without waiting for it."""
    _signal_group(child.pid, signal.SIGTERM)
    if relayed.wait(GRACE_SECONDS):
        return
    log.warning("Killing what is left of the group after %.0f s", GRACE_SECONDS)
    _signal_group(child.pid, signal.SIGKILL)
    if not relayed.wait(EXIT_GRACE_SECONDS):
        sys.stdout.flush()
        os._exit(0)


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def _watch_lock(
    lock: LeaderLock,
    stopping: threading.Event,
    lost: threading.Event,
    stop: Callable[[str], None],
) -> None:
    """Stop the daemon as soon as another one holds the lock, or once the database has been
    unreachable for `LOCK_LOST_GRACE_SECONDS`; a shorter outage only costs a reconnect."""
    unreachable_since: float | None = None
    while not stopping.wait(LOCK_CHECK_SECONDS if unreachable_since is None else 1.0):
        state = lock.check()
        if state == "held":
            if unreachable_since is not None:
                log.info("Holding the daemon lock again")
            unreachable_since = None
            continue
        if state == "unreachable":
            unreachable_since = unreachable_since or time.monotonic()
            if time.monotonic() - unreachable_since < LOCK_LOST_GRACE_SECONDS:
                continue
        log.error(
            "Lost the daemon lock (%s): stopping, so that two daemons never run at once",
            "another daemon holds it" if state == "taken" else "the database is unreachable",
        )
        lost.set()
        stop("lost the daemon lock")
        return


def _first_line(error: BaseException) -> str:
    return " ".join(str(error).split("\n", 1)[0].split())

"""An embedded PostgreSQL for development, when no database is configured.

pgserver ships PostgreSQL binaries in its wheel, so a fresh machine with only Python gets a real
server: no system install, no Docker. The data directory lives in the project (kept between
runs, ignored by git) and the server keeps running after the command exits, so the webserver,
the daemon and later commands all reach the same database.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

log = logging.getLogger(__name__)

DATABASE_NAME = "observing"


def start_embedded_postgres(pgdata: Path, *, keep_running: bool = True) -> str:
    """Start (or reuse) the server under `pgdata`; return the URL of its `observing` database.

    With `keep_running=False` the server stops when this process exits (the tests' choice).
    """
    from pgserver.postgres_server import get_server  # only development needs it

    pgdata.mkdir(parents=True, exist_ok=True)
    server = get_server(pgdata.resolve(), cleanup_mode=None if keep_running else "stop")
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")
    if "(0 rows)" in exists:
        server.psql(f"CREATE DATABASE {DATABASE_NAME};")
    base = server.get_uri()  # postgresql://postgres:@/postgres?host=<socket dir>
    url = base.replace("@/postgres?", f"@/{DATABASE_NAME}?", 1)
    log.info("Embedded PostgreSQL running; data directory %s", pgdata.resolve())
    return url


def stop_embedded_postgres(pgdata: Path, timeout_seconds: float = 30.0) -> bool:
    """Fast-shut-down the server under `pgdata` (its data stays for the next `dev`).

    Signals the postmaster directly (what `pg_ctl stop -m fast` does): pgserver runs it as its
    own system user when we are root, so `pg_ctl` from here would be refused.
    """
    pid_file = pgdata / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, signal.SIGINT)
    except (FileNotFoundError, IndexError, ValueError, ProcessLookupError):
        log.info("No embedded PostgreSQL running under %s", pgdata.resolve())
        return False
    deadline = time.monotonic() + timeout_seconds
    while pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    log.info("Embedded PostgreSQL under %s stopped", pgdata.resolve())
    return not pid_file.exists()

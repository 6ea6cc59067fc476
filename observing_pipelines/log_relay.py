"""The daemon's and webserver's output as Cloud Logging entries: one entry per record, and a
record that keeps repeating once a minute, with its count.

What those processes print is a mix: Dagster's structured lines (`--log-format json`:
`{"event", "level", ...}`), our own JSON lines (runs, the webserver's guards), Dagster's
coloured console lines (code servers), and Python's default log format with multi-line
messages and tracebacks (a library logging through the root logger). With the database down,
the daemon printed about 3,000 lines in 40 s, each traceback line its own entry, many at INFO.

Here lines that belong together (a message's continuation lines, a traceback with its chained
causes and final exception line) become one entry, and an entry holding a traceback is at
least ERROR. An entry equal to one printed in the last `window` seconds (digits aside: ports,
pids and counts differ from one retry to the next) is counted instead of printed; when the
window closes, one line says how many more there were. A line naming an `event` (a dead
letter, one item's failure: lines alerting counts) is never held back: a pass prints at most one
per item, and a count of such lines must not stop at one a minute.
"""

from __future__ import annotations

import json
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from observing_pipelines.logging_json import EVENT_FIELD, cloud_logging_line, known_secrets, scrub

REPEAT_WINDOW_SECONDS = 60.0
IDLE_FLUSH_SECONDS = 0.25
"""A multi-line record arrives in one burst: a pause this long ends it."""

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CONSOLE_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4} - (?P<logger>\S+) - "
    r"(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) - (?P<rest>.*)$"
)
_RUN_PREFIX = re.compile(r"^(?P<job>\S+) - (?P<run_id>[0-9a-f]{8}-[0-9a-f-]{27}) - ")
_PYTHON_DEFAULT = re.compile(r"^(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL):(?P<logger>[^:\s]*):")
_TRACEBACK = "Traceback (most recent call last):"
_CONTINUES = re.compile(
    r"^(\s|Traceback \(most recent call last\):|The above exception|During handling of the "
    r"above exception|Stack Trace:|\(Background on this error)"
)
_RANKS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
_DIGITS = re.compile(r"\d+")


@dataclass
class Entry:
    severity: str
    logger: str
    lines: list[str]
    labels: dict[str, str] = field(default_factory=dict)
    ready: str | None = None
    """A line that already is one of ours, passed on as it is."""
    event: str | None = None
    """The `event` a line of ours names, if any."""

    @property
    def has_traceback(self) -> bool:
        return any(line.startswith(_TRACEBACK) for line in self.lines)

    def key(self) -> tuple[str, str, str]:
        first = self.ready if self.ready is not None else self.lines[0]
        return self.severity, self.logger, _DIGITS.sub("#", first)

    def render(self, secrets: Iterable[str], suffix: str = "") -> str:
        """The entry as one Cloud Logging line, `suffix` appended to its message."""
        if self.ready is not None:
            if not suffix:
                return scrub(self.ready, secrets)
            record = json.loads(self.ready)
            record["message"] = f"{record.get('message', '')}{suffix}"
            record["time"] = datetime.now(UTC).isoformat()  # the summary's own time
            return scrub(json.dumps(record), secrets)
        severity = "ERROR" if self.has_traceback and _RANKS[self.severity] < 40 else self.severity
        return cloud_logging_line(
            severity,
            "\n".join(self.lines) + suffix,
            logger=self.logger,
            labels=self.labels,
            secrets=secrets,
        )


def parse(line: str, process: str) -> Entry:
    """The entry a line starts (a continuation line starts a plain entry of its own)."""
    labels = {"process": process}
    try:
        record: Any = json.loads(line)
    except ValueError:
        record = None
    if isinstance(record, dict) and "severity" in record:  # a run's line, or ours: already JSON
        named = record.get(EVENT_FIELD)
        return Entry(
            str(record["severity"]),
            str(record.get("logger", process)),
            [],
            ready=line,
            event=named if isinstance(named, str) else None,
        )
    if isinstance(record, dict) and "event" in record:  # Dagster's --log-format json
        severity = {"warn": "WARNING", "exception": "ERROR"}.get(
            str(record.get("level", "info")).lower(), str(record.get("level", "info")).upper()
        )
        return Entry(
            severity if severity in _RANKS else "INFO",
            str(record.get("logger", process)),
            [str(record["event"])],
            labels,
        )
    plain = _ANSI.sub("", line)
    if console := _CONSOLE_LINE.match(plain):  # Dagster's coloured console format
        if run := _RUN_PREFIX.match(console["rest"]):
            labels |= {"job_name": run["job"], "run_id": run["run_id"]}
        return Entry(console["level"], console["logger"], [console["rest"]], labels)
    if default := _PYTHON_DEFAULT.match(plain):  # Python's own format, through the root logger
        return Entry(default["level"], default["logger"] or "root", [plain], labels)
    severity = "ERROR" if plain.startswith(_TRACEBACK) else "INFO"
    return Entry(severity, process, [plain], labels)


def _starts_a_record(line: str) -> bool:
    plain = _ANSI.sub("", line)
    return bool(plain.startswith("{") or _CONSOLE_LINE.match(plain) or _PYTHON_DEFAULT.match(plain))


def _ends_a_traceback(entry: Entry, line: str) -> bool:
    """`line` is the exception line closing the traceback `entry` is in the middle of: it
    follows the traceback's header or one of its indented frame lines."""
    last = entry.lines[-1] if entry.lines else ""
    return entry.has_traceback and (last[:1].isspace() or last.startswith(_TRACEBACK))


class Grouper:
    """Lines in, whole entries out: a line joins the entry before it when it continues it (an
    indented line, a traceback, its chained causes and its closing exception line)."""

    def __init__(self, process: str) -> None:
        self.process = process
        self.pending: Entry | None = None

    def feed(self, line: str) -> list[Entry]:
        pending = self.pending
        continues = (
            pending is not None
            and pending.ready is None
            and not _starts_a_record(line)
            and (_CONTINUES.match(line) is not None or _ends_a_traceback(pending, line))
        )
        if pending is not None and continues:
            pending.lines.append(_ANSI.sub("", line))
            return []
        done = self.flush()
        entry = parse(line, self.process)
        if entry.ready is not None:
            return [*done, entry]
        self.pending = entry
        return done

    def flush(self) -> list[Entry]:
        done, self.pending = ([self.pending] if self.pending else []), None
        return done


class RepeatFilter:
    """Each distinct entry at most once per `window` seconds, then how many more there were."""

    def __init__(self, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.clock = clock
        self.seen: dict[tuple[str, str, str], tuple[float, int, Entry]] = {}

    def admit(self, entry: Entry) -> list[tuple[Entry, str]]:
        """What to print now: the summary of an earlier window of this entry, then the entry
        itself; nothing while it repeats inside its window. An entry naming an event is always
        printed."""
        if entry.event is not None:
            return [(entry, "")]
        now = self.clock()
        key = entry.key()
        since, repeats, first = self.seen.get(key, (now, 0, entry))
        if key in self.seen and now - since < self.window:
            self.seen[key] = (since, repeats + 1, first)
            return []
        out = [self._summary(first, repeats)] if repeats else []
        self.seen[key] = (now, 0, entry)
        return [*out, (entry, "")]

    def expire(self, everything: bool = False) -> list[tuple[Entry, str]]:
        """Summaries of the windows that have closed (all of them at the end of the output)."""
        now = self.clock()
        closed = [
            key
            for key, (since, _, _) in self.seen.items()
            if everything or now - since >= self.window
        ]
        summaries = []
        for key in closed:
            _, repeats, first = self.seen.pop(key)
            if repeats:
                summaries.append(self._summary(first, repeats))
        return summaries

    def _summary(self, entry: Entry, repeats: int) -> tuple[Entry, str]:
        return entry, f" (and {repeats} more like it in the {self.window:.0f} s before)"


def relay_process_logs(
    lines: Iterable[str],
    out: IO[str],
    process: str,
    *,
    window: float = REPEAT_WINDOW_SECONDS,
    idle: float = IDLE_FLUSH_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Write `lines` (a child's output) to `out` as Cloud Logging JSON entries."""
    secrets = known_secrets()
    grouper = Grouper(process)
    repeats = RepeatFilter(window, clock)

    def write(printed: Iterable[tuple[Entry, str]]) -> None:
        for entry, suffix in printed:
            out.write(entry.render(secrets, suffix) + "\n")
        out.flush()

    def emit(entries: Iterable[Entry]) -> None:
        write(admitted for entry in entries for admitted in repeats.admit(entry))

    for line in _with_pauses(lines, idle):
        if line is None:  # a pause: the record in progress is complete
            emit(grouper.flush())
            write(repeats.expire())
            continue
        text = line.rstrip("\n")
        if text.strip():
            emit(grouper.feed(text))
    emit(grouper.flush())
    write(repeats.expire(everything=True))


def _with_pauses(lines: Iterable[str], idle: float) -> Iterator[str | None]:
    """`lines`, with None whenever none arrived for `idle` seconds (read in a thread of its
    own, so that a quiet pipe does not hold back a finished record)."""
    arrived: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in lines:
            arrived.put(line)
        arrived.put(None)

    threading.Thread(target=read, daemon=True).start()
    while True:
        try:
            line = arrived.get(timeout=idle)
        except queue.Empty:
            yield None
            continue
        if line is None:
            return
        yield line

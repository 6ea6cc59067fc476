"""The benchmark scripts keep working: each runs here at a tiny size. Their numbers are not
checked (performance is measured by running them in full, by hand); what is checked is what
they assert themselves (a warm pass never calls upstream) and that they print their tables."""

from __future__ import annotations

import re
import sys

import pytest

from benchmarks import common, latency, scale, throughput


@pytest.fixture(autouse=True)
def bench_database(server_url, monkeypatch):
    monkeypatch.setenv("OBSERVING_BENCH_DATABASE_URL", server_url)
    common.server_url.cache_clear()
    yield
    common.server_url.cache_clear()


def run_script(main, monkeypatch, *argv: str) -> None:
    monkeypatch.setattr(sys, "argv", ["benchmark", *argv])
    main()


def test_scale_benchmark_runs(monkeypatch, capsys):
    run_script(scale.main, monkeypatch, "--sizes", "400")
    out = capsys.readouterr().out
    for step in ("full pass", "nothing to do", "one new ingest", "no partial index"):
        assert step in out
    assert "| 400 " in out


def test_throughput_benchmark_runs(monkeypatch, capsys):
    run_script(throughput.main, monkeypatch, "--names", "12", "--latency-ms", "1", "--rounds", "1")
    out = capsys.readouterr().out
    for algorithm in ("ours, batches (defaults)", "ours, one name a request", "legacy"):
        assert f"| {algorithm}" in out


def test_latency_benchmark_runs(monkeypatch, capsys):
    run_script(
        latency.main,
        monkeypatch,
        *("--sizes", "400", "--modes", "sensors on", "--steady-seconds", "4"),
        *("--quiet-seconds", "1", "--burst", "3", "--latency-ms", "1", "--settle-seconds", "90"),
    )
    out = capsys.readouterr().out
    for phase in ("no inserts", "one every 2 s", "burst of 3"):
        assert f"| {phase} " in out
    assert re.search(r"\| 400 +\| sensors on +\| burst of 3 +\| 3 +\|", out)

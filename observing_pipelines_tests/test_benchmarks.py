"""The benchmark scripts keep working: each runs here at a tiny size. Their numbers are not
checked (performance is measured by running them in full, by hand); what is checked is what
they assert themselves (a warm pass never calls upstream) and that they print their tables."""

from __future__ import annotations

import sys

import pytest

from benchmarks import common, scale, throughput


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

"""`observing-pipelines resolve-taxa`: today's flags and exit codes, without Dagster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from observing_pipelines.cli import main
from observing_pipelines.db.connection import redact
from observing_pipelines.settings import Settings
from observing_pipelines_tests import fakes
from observing_pipelines_tests.test_resolve_taxa import identify, keys, snapshot

CLI = Path(sys.executable).with_name("observing-pipelines")


@pytest.fixture
def env(monkeypatch, gbif_server, wikidata_server):
    for name in ("DATABASE_URL", "DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GBIF_BASE_URL", gbif_server.url_for(""))
    monkeypatch.setenv("WIKIDATA_SPARQL_URL", wikidata_server.url_for("/sparql"))
    return monkeypatch


def test_no_database_configured_exits_2(env, caplog):
    assert main(["resolve-taxa"]) == 2
    assert "no database configured" in caplog.text


def test_unreachable_database_exits_1_without_leaking_the_password(env, caplog):
    env.setenv("DB_HOST", "127.0.0.1")
    env.setenv("DB_PORT", "1")
    env.setenv("DB_USER", "jobs")
    env.setenv("DB_PASSWORD", "s3cret-pa55")
    assert main(["resolve-taxa"]) == 1
    assert "s3cret-pa55" not in caplog.text and "***" in caplog.text


def test_a_pass_exits_0_and_prints_its_summary(env, conn, db_url, fake_gbif, capsys):
    fake_gbif.add_name(
        "Helianthus annuus",
        fakes.match_body("EXACT", fakes.HELIANTHUS_ANNUUS, fakes.HELIANTHUS_LINEAGE),
    )
    uris = identify(conn, ("Helianthus annuus", "Plantae"), ("Aaasdfadsf", None))
    env.setenv("DATABASE_URL", db_url)
    assert main(["resolve-taxa", "--rate-limit-ms", "0", "--limit", "10"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (
        summary["names_resolved"] == 1
        and summary["names_not_found"] == 1
        and summary["rows_stamped"] == 1
    )
    assert keys(conn, uris) == [9206251, None]


def test_dry_run_writes_nothing(env, conn, db_url, fake_gbif, capsys):
    identify(conn, ("Helianthus annuus", "Plantae"))
    before = snapshot(conn)
    env.setenv("DATABASE_URL", db_url)
    assert main(["resolve-taxa", "--dry-run"]) == 0
    assert snapshot(conn) == before and fake_gbif.calls == 0


def test_refresh_failure_exits_1(env, conn, db_url, fake_gbif):
    with (
        conn,
        conn.cursor() as cur,
    ):  # without its unique index the view cannot refresh concurrently
        cur.execute("DROP INDEX ingester.community_ids_occurrence_uri_idx")
    env.setenv("DATABASE_URL", db_url)
    assert main(["resolve-taxa"]) == 1


def test_bad_flags_are_rejected(env):
    with pytest.raises(SystemExit) as exit_info:
        main(["resolve-taxa", "--limit", "0"])
    assert exit_info.value.code == 2


# --- every door refuses bad input with one line, before anything runs -------------------------


def command(*args: str, **env: str) -> tuple[int, list[dict], str]:
    """The installed command in a clean environment: its exit code, its stderr as JSON lines
    (every line must be one), and its stdout."""
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_", "DAGSTER_"))
    }
    completed = subprocess.run(
        [str(CLI), *args],
        env=environ | env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = [json.loads(line) for line in completed.stderr.splitlines() if line.strip()]
    return completed.returncode, lines, completed.stdout


@pytest.mark.parametrize(
    ("variable", "value", "args"),
    [
        ("GBIF_RATE_LIMIT_MS", "abc", ("resolve-taxa",)),
        ("PORT", "-1", ("webserver",)),
        ("PORT", "70000", ("webserver",)),
        ("WEBSERVER_READ_ONLY", "maybe", ("webserver",)),
        ("GBIF_MAX_CONCURRENCY", "0", ("resolve-taxa",)),
    ],
)
def test_a_bad_setting_is_one_json_error_line_naming_it(variable, value, args):
    code, lines, _ = command(*args, **{variable: value})
    assert code == 2
    (line,) = lines
    assert line["severity"] == "ERROR" and variable in line["message"], line


@pytest.mark.parametrize(
    ("value", "read_only"),
    [("1", True), ("TRUE", True), ("yes", True), ("on", True), ("0", False), ("off", False)],
)
def test_booleans_take_the_usual_spellings(value, read_only):
    assert Settings.from_env({"WEBSERVER_READ_ONLY": value}).webserver_read_only is read_only


@pytest.mark.parametrize(
    "args",
    [
        ("--limit", "-5"),
        ("--limit", "0"),
        ("--kingdom", "Plant\x01ae"),
        ("--kingdom", "Plants"),
    ],
)
def test_resolve_taxa_refuses_what_the_jobs_refuse(env, args):
    with pytest.raises(SystemExit) as exit_info:
        main(["resolve-taxa", *args])
    assert exit_info.value.code == 2


def test_resolve_taxa_takes_a_kingdom_in_any_case(env, conn, db_url, fake_gbif):
    identify(conn, ("Helianthus annuus", "Plantae"))
    env.setenv("DATABASE_URL", db_url)
    assert main(["resolve-taxa", "--dry-run", "--kingdom", "pLANTAE"]) == 0


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("resolve_taxa", "--set", "limit"), "--set takes KEY=VALUE"),
        (("resolve_taxa", "--set", "names=[unclosed"), "--set names:"),
        (("resolve_taxa", "--set", "limit=-5"), "limit: must be a whole number from 1"),
        (("resolve_taxa", "--set", "kingdom=Plants"), "kingdom: must be one of"),
        (("resolve_taxa", "--set", "kingdom=Plant\x01ae"), "--set kingdom:"),
        (("thumbnails", "--set", "small_width=321"), "321px is not a Commons standard width"),
        (("no_such_job",), "no job 'no_such_job'"),
        (("resolve_taxa", "--config", "/nonexistent/run.yaml"), "--config /nonexistent/run.yaml"),
    ],
    ids=[
        "no-equals",
        "bad-yaml",
        "negative-limit",
        "unknown-kingdom",
        "control-kingdom",
        "width",
        "job",
        "file",
    ],
)
def test_trigger_refuses_bad_input_with_exit_2_and_one_line(args, reason):
    code, lines, stdout = command("trigger", *args, DAGSTER_GRAPHQL_PORT="9")
    assert code == 2 and stdout == ""
    (line,) = lines
    assert line["severity"] == "ERROR" and reason in line["message"], line


def test_trigger_says_why_the_webserver_cannot_be_reached():
    code, lines, _ = command("trigger", "resolve_taxa", DAGSTER_GRAPHQL_PORT="9")
    assert code == 1
    (line,) = lines
    assert "cannot reach http://127.0.0.1:9/graphql: " in line["message"]
    assert "Connection refused" in line["message"] or "ConnectionRefused" in line["message"]
    assert "mutation" not in line["message"]  # not the whole GraphQL query


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://jobs:kv-s3cret-pw@127.0.0.1:1/observing",
        "postgresql:///observing?host=127.0.0.1&port=1&user=jobs&password=kv-s3cret-pw",
        "host=127.0.0.1 port=1 dbname=observing user=jobs password=kv-s3cret-pw",
        "host=127.0.0.1 port=1 dbname=observing user=jobs password='kv-s3cret-pw'",
    ],
    ids=["url", "url-parameter", "keywords", "quoted-keywords"],
)
def test_a_database_failure_line_never_shows_the_password(dsn):
    code, lines, _ = command("resolve-taxa", DATABASE_URL=dsn)
    assert code == 1
    text = json.dumps(lines)
    assert "kv-s3cret-pw" not in text and "***" in text, text


@pytest.mark.parametrize(
    ("dsn", "redacted"),
    [
        ("postgresql://u:pw@h:5432/db", "postgresql://u:***@h:5432/db"),
        (
            "postgresql:///observing?host=/cloudsql/p:r:i&password=s3cret",
            "postgresql:///observing?host=/cloudsql/p:r:i&password=***",
        ),
        ("host=/cloudsql/x user=jobs password=s3cret", "host=/cloudsql/x user=jobs password=***"),
        ("host=h password='a b\\' c' user=x", "host=h password=*** user=x"),
        ("postgresql://u@/db?host=%2Fcloudsql%2Fp", "postgresql://u@/db?host=%2Fcloudsql%2Fp"),
        ("postgresql://u@/db?sslpassword=k&x=1", "postgresql://u@/db?sslpassword=***&x=1"),
    ],
)
def test_redact_keeps_every_form_as_written_but_its_password(dsn, redacted):
    assert redact(dsn) == redacted

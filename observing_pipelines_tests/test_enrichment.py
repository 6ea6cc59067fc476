"""The enrichment engine, through the real jobs: one taxon's exception is one recorded failure,
failures back off by the job's policy, and an interrupted pass keeps every chunk it finished."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from observing_pipelines.db.item_failures import PriorFailure
from observing_pipelines.db.taxa import DueTaxon
from observing_pipelines.taxa import enrichment
from observing_pipelines.taxa.backbone_freshness import BackboneFreshness, BackboneFreshnessOptions
from observing_pipelines.taxa.conservation_status import ConservationStatus
from observing_pipelines.taxa.thumbnails import Thumbnails, ThumbnailsOptions
from observing_pipelines.taxa.vernacular_names import VernacularNames, VernacularNamesRow
from observing_pipelines_tests import fakes
from observing_pipelines_tests.test_backbone_freshness import age_taxa
from observing_pipelines_tests.test_thumbnails import cache_taxa, failures
from observing_pipelines_tests.test_vernacular_names import names

KEYS = list(range(301, 308))  # seven species: chunks of two make three whole ones and a rest


class Interrupted(BaseException):
    """What a deploy's SIGTERM raises inside a run (Dagster's interrupt is a BaseException)."""


class Flaky(VernacularNames):
    """Vernacular names whose look-up of one taxon fails the way a bug would."""

    def look_up(self, item: DueTaxon, prior: PriorFailure | None) -> VernacularNamesRow:
        if item.taxon_key == 303:
            raise KeyError("vernacularName")
        return super().look_up(item, prior)


def next_attempts(conn, job):
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT item_key, next_attempt_at - last_failed_at FROM pipelines.job_item_failures "
            "WHERE job = %s",
            (job,),
        )
        return dict(cur.fetchall())


def test_any_exception_of_one_look_up_is_that_taxons_recorded_failure(
    conn, fake_gbif, gbif_client, caplog
):
    cache_taxa(conn, *((key, f"Species {key}") for key in KEYS))
    for key in KEYS:
        fake_gbif.vernacular_names[key] = names((f"name {key}", "eng"))
    report = enrichment.run(conn, Flaky(gbif_client), limit=100, concurrency=3)
    assert (report.seen, report.changed, report.failed) == (7, 6, 1)
    assert report.failures.rows == [{"item": "taxon 303", "error": "KeyError: 'vernacularName'"}]
    assert failures(conn, "vernacular_names") == {303: (1, "KeyError: 'vernacularName'")}
    assert "Unexpected failure for taxon 303" in caplog.text  # with its traceback, for the bug
    first = next_attempts(conn, "vernacular_names")[303]
    assert abs(first - VernacularNames.spec.retry.first) < timedelta(seconds=5)

    with conn, conn.cursor() as cur:  # the backoff has passed: it is asked, and fails, again
        cur.execute("UPDATE pipelines.job_item_failures SET next_attempt_at = now()")
    assert enrichment.run(conn, Flaky(gbif_client), limit=100, concurrency=3).seen == 1
    assert failures(conn, "vernacular_names")[303][0] == 2
    second = next_attempts(conn, "vernacular_names")[303]
    assert abs(second - 2 * VernacularNames.spec.retry.first) < timedelta(seconds=5)


def vernacular_names(conn, request):
    fake, gbif = request.getfixturevalue("fake_gbif"), request.getfixturevalue("gbif_client")
    cache_taxa(conn, *((key, f"Species {key}") for key in KEYS))
    for key in KEYS:
        fake.vernacular_names[key] = names((f"name {key}", "eng"))
    return VernacularNames(gbif), "taxon_vernacular_names"


def conservation_status(conn, request):
    fake, gbif = request.getfixturevalue("fake_gbif"), request.getfixturevalue("gbif_client")
    cache_taxa(conn, *((key, f"Species {key}") for key in KEYS))
    fake.red_list.update({key: {"code": "LC"} for key in KEYS})
    return ConservationStatus(gbif, None), "taxon_conservation"


def thumbnails(conn, request):
    wikidata = request.getfixturevalue("wikidata_client")
    commons = request.getfixturevalue("commons_client")
    request.getfixturevalue("fake_wikidata")
    request.getfixturevalue("fake_commons")
    cache_taxa(conn, *((key, f"Species {key}") for key in KEYS))
    return Thumbnails(wikidata, commons, ThumbnailsOptions()), "taxon_images"


def backbone_freshness(conn, request):
    fake, gbif = request.getfixturevalue("fake_gbif"), request.getfixturevalue("gbif_client")
    cache_taxa(conn, *((key, f"Species {key}") for key in KEYS))
    with conn, conn.cursor() as cur:  # each used by a recent identification: all hot
        for key in KEYS:
            cur.execute(
                "INSERT INTO ingester.occurrences (uri, cid, did, created_at) "
                "VALUES (%(uri)s, 'c', 'did:plc:t', now());"
                "INSERT INTO ingester.identifications (uri, cid, did, subject_uri, subject_cid, "
                "scientific_name, accepted_taxon_key, date_identified) "
                "VALUES (%(uri)s, 'c', 'did:plc:t', %(uri)s, 'c', 'Species', %(key)s, now())",
                {"uri": f"at://did:plc:t/o/{key}", "key": key},
            )
    age_taxa(conn)
    for key in KEYS:
        fake.add_key(key, fakes.match_body("EXACT", (key, f"Species {key}", "SPECIES")))
    job = BackboneFreshness(gbif, BackboneFreshnessOptions(top_n=100))
    return job, "recent_fetches"


def saved(conn, table):
    with conn, conn.cursor() as cur:
        if table == "recent_fetches":  # freshness keeps no table of its own: `fetched_at` moves
            cur.execute(
                "SELECT count(*) FROM ingester.taxa WHERE fetched_at > now() - interval '1 hour'"
            )
        else:
            cur.execute(f"SELECT count(*) FROM pipelines.{table}")
        return cur.fetchone()[0]


@pytest.mark.parametrize(
    "build", [thumbnails, conservation_status, backbone_freshness, vernacular_names]
)
def test_an_interrupted_pass_keeps_every_chunk_it_finished(conn, request, build):
    job, table = build(conn, request)
    job.spec = replace(job.spec, chunk_size=2)
    asked = 0
    look_up_chunk = job.look_up_chunk

    def interrupted_on_the_third(chunk, priors, pool):
        nonlocal asked
        asked += 1
        if asked == 3:
            raise Interrupted
        return look_up_chunk(chunk, priors, pool)

    job.look_up_chunk = interrupted_on_the_third
    with pytest.raises(Interrupted):
        enrichment.run(conn, job, limit=100, concurrency=2)
    assert saved(conn, table) == 4  # the two chunks before, whole; nothing of the third
    job.look_up_chunk = look_up_chunk
    rest = enrichment.run(conn, job, limit=100, concurrency=2)
    assert (rest.seen, rest.failed) == (3, 0)  # the next pass picks up where it stopped
    assert saved(conn, table) == 7

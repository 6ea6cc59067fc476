"""What the asset pages show: each asset's columns and README link, thumbnails' pictures, and
tables of what a run changed or failed, under numeric names that stay the same run to run."""

from __future__ import annotations

import re
from collections.abc import Mapping

import dagster as dg
from werkzeug import Response

from observing_pipelines.definitions import defs
from observing_pipelines.jobs.common import README_URL, picture_table, sample_table
from observing_pipelines.jobs.resolve_taxa import identification_taxa
from observing_pipelines.jobs.thumbnails import taxon_images
from observing_pipelines.resources import (
    AppDatabaseResource,
    CommonsResource,
    GbifResource,
    WikidataResource,
)
from observing_pipelines.taxa.report import MAX_REPORTED, Sample
from observing_pipelines_tests import fakes
from observing_pipelines_tests.support import PROJECT_ROOT
from observing_pipelines_tests.test_resolve_taxa import identify
from observing_pipelines_tests.test_thumbnails import cache_taxa


def readme_anchors() -> set[str]:
    """GitHub's anchors of the README's headings."""
    headings = re.findall(r"^#+ (.+)$", (PROJECT_ROOT / "README.md").read_text(), re.MULTILINE)
    return {re.sub(r"[^a-z0-9 _-]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_asset_declares_its_columns_and_links_its_readme_section():
    anchors = readme_anchors()
    specs = [spec for asset in defs.assets or () for spec in asset.specs]
    assert len(specs) == 7
    for spec in specs:
        schema = spec.metadata["dagster/column_schema"]
        assert isinstance(schema, dg.TableSchema) and len(schema.columns) >= 5, spec.key
        url = spec.metadata["docs"].url
        assert url.startswith(f"{README_URL}#") and url.split("#")[1] in anchors, url
    images = next(s for s in specs if s.key == taxon_images.key)
    columns = {c.name: c for c in images.metadata["dagster/column_schema"].columns}
    assert columns["taxon_key"].type == "bigint" and not columns["taxon_key"].constraints.nullable
    assert columns["artist"].type == "text" and columns["artist"].constraints.nullable
    assert {"attribution_required", "fetched_at", "next_check_at"} <= set(columns)
    taxa = next(s for s in specs if s.key == identification_taxa.key)
    assert "class" in {c.name for c in taxa.metadata["dagster/column_schema"].columns}


def materialize(asset, resources) -> Mapping[str, dg.MetadataValue]:
    result = dg.materialize([asset], resources=resources)
    (event,) = result.get_asset_materialization_events()
    return event.materialization.metadata


def test_thumbnails_show_the_pictures_they_found(
    conn, db_url, fake_wikidata, fake_commons, wikidata_server, commons_server
):
    keys = list(range(1000, 1025))
    cache_taxa(conn, *((key, f"Species {key}") for key in keys))
    for key in keys:
        fake_wikidata.images[key] = (f"Q{key}", [(f"Flower {key}.jpg", "normal")])
        fake_commons.files[f"Flower {key}.jpg"] = fakes.CommonsFile(
            artist_html="Ann | <b>[Bo](javascript:x)</b>"
        )
    resources = {
        "app_db": AppDatabaseResource(url=db_url),
        "wikidata": WikidataResource(
            base_url=wikidata_server.url_for("/sparql"), min_interval_ms=0
        ),
        "commons": CommonsResource(
            base_url=commons_server.url_for("/w/api.php"), min_interval_ms=0
        ),
    }
    first = materialize(taxon_images, resources)
    pictures = first["pictures"].value.splitlines()
    assert pictures[:2] == ["| picture | title | licence | artist |", "|---|---|---|---|"]
    assert len(pictures) == 2 + MAX_REPORTED  # 25 found, 20 shown
    assert pictures[2].startswith(
        r"| ![Flower 1000.jpg](https://upload.wikimedia.org/wikipedia/commons/thumb/"
    )
    assert "120px-Flower_1000.jpg)" in pictures[2]
    assert r"| CC BY-SA 4.0 | Ann \| \[Bo\]\(javascript:x\) |" in pictures[2]
    table = first["changed_items"].value
    assert [c.name for c in table.schema.columns][:3] == ["taxon_key", "status", "title"]
    assert table.schema.columns[0].type == "bigint" and len(table.records) == MAX_REPORTED
    numbers = {k for k, v in first.items() if isinstance(v.value, int | float)}
    assert numbers >= {"taxa_seen", "taxa_changed", "with_image", "seconds"}

    second = materialize(taxon_images, resources)  # nothing due: nothing changed
    assert "pictures" not in second and "changed_items" not in second
    assert {k for k, v in second.items() if isinstance(v.value, int | float)} == numbers


def test_resolve_taxa_tables_what_it_resolved_and_what_failed(
    conn, db_url, fake_gbif, gbif_server, wikidata_server
):
    fake_gbif.add_name(
        "Helianthus annuus",
        fakes.match_body("EXACT", fakes.HELIANTHUS_ANNUUS, fakes.HELIANTHUS_LINEAGE),
    )
    down = Response("<html>down</html>", status=503, content_type="text/html")
    fake_gbif.script("Panthera leo", *[down] * 9)  # every try of the request
    identify(conn, ("Helianthus annuus", "Plantae"), ("Panthera leo", "Animalia"))
    metadata = materialize(
        identification_taxa,
        {
            "app_db": AppDatabaseResource(url=db_url),
            "gbif": GbifResource(
                base_url=gbif_server.url_for(""), min_interval_ms=0, match_batch_size=0
            ),
            "wikidata": WikidataResource(
                base_url=wikidata_server.url_for("/sparql"), min_interval_ms=0
            ),
        },
    )
    resolved = metadata["changed_items"].value
    assert [c.name for c in resolved.schema.columns] == [
        "kind",
        "subject",
        "kingdom",
        "accepted_taxon_key",
    ]
    assert [r.data for r in resolved.records] == [
        {
            "kind": "name",
            "subject": "Helianthus annuus",
            "kingdom": "Plantae",
            "accepted_taxon_key": 9206251,
        }
    ]
    (failed,) = metadata["failed_items"].value.records
    assert failed.data["subject"] == "Panthera leo" and "503" in failed.data["error"]


def test_a_sample_is_typed_by_its_values_and_pictures_need_https():
    sample = Sample()
    sample.add(key=1, share=0.5, found=True, name=None)
    sample.add(key=2, share=1.5, found=False, name="x", thumbnail="javascript:alert(1)")
    table = sample_table(sample)
    assert [(c.name, c.type) for c in table.schema.columns] == [
        ("key", "bigint"),
        ("share", "float"),
        ("found", "boolean"),
        ("name", "text"),
        ("thumbnail", "text"),
    ]
    assert table.records[0].data["thumbnail"] is None
    assert picture_table(sample) is None

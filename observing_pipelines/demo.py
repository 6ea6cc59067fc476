"""A small demo set for an empty embedded database, so the first `dagster dev` run has work.

Real names chosen to exercise each path of resolve_taxa: plain species, authorship in the name,
a synonym (Anastrophyllum minutum -> Sphenolobus minutus), a misspelling (GBIF answers VARIANT),
a homonym told apart by kingdom, a name GBIF cannot match, and the three taxonID URI forms.
"""

from observing_pipelines.db.identifications import NewIdentification

_DID = "did:plc:demo-observer"

DEMO_IDENTIFICATIONS = [
    NewIdentification(
        f"at://{_DID}/bio.lexicons.temp.v0-1.identification/{n}",
        _DID,
        f"at://{_DID}/bio.lexicons.temp.v0-1.occurrence/{n}",
        name,
        kingdom,
        taxon_id,
    )
    for n, (name, kingdom, taxon_id) in enumerate(
        [
            ("Helianthus annuus", "Plantae", None),
            ("Quercus robur L.", "Plantae", None),
            ("Panthera leo (Linnaeus, 1758)", "Animalia", None),
            ("Anastrophyllum minutum", "Plantae", None),
            ("Helianthus anuus", "Plantae", None),
            ("Satyrium", "Plantae", None),
            ("Satyrium", "Animalia", None),
            ("Calopteryx fakeus", "Animalia", None),
            ("Lion", None, "https://www.inaturalist.org/taxa/41944"),
            ("Snow leopard", None, "https://www.gbif.org/species/5219436"),
            ("House sparrow", None, "http://www.wikidata.org/entity/Q29564"),
        ],
        start=1,
    )
]

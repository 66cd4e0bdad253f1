from tortoise import fields, migrations
from tortoise.indexes import Index
from tortoise.migrations import operations as ops

# The rows as they are, keyed by their sheet's pk (every row's URI is a stored sheet's).
_COPY = (
    "CREATE TABLE hub_sheet_match_0011 AS SELECT s.pk_id AS sheet_pk, m.uri, m.source, m.block, m.title_key,"
    " m.cluster FROM hub_sheet_match m JOIN sheet s ON s.uri = m.uri"
)


class Migration(migrations.Migration):
    """Duplicate keys are keyed by their sheet's integer pk instead of its URI.

    A harvest writes one row per sheet: keyed by the sheet's pk, it goes at the end of the table
    (pks grow) instead of into a unique index of random URIs, one B-tree fewer to update on every
    page. The partial cluster index of migration 0010 is made again on the new table.
    """

    dependencies = [("node", "0010_hub_match_cluster_partial")]

    initial = False

    operations = [
        ops.RunSQL(_COPY, reverse_sql="DROP TABLE hub_sheet_match_0011"),
        ops.DeleteModel(name="HubSheetMatch"),
        ops.CreateModel(
            name="HubSheetMatch",
            fields=[
                ("sheet_pk", fields.BigIntField(primary_key=True, generated=False, unique=True, db_index=True)),
                ("uri", fields.CharField(max_length=512)),
                ("source", fields.CharField(max_length=128)),
                ("block", fields.CharField(max_length=255)),
                ("title_key", fields.TextField(unique=False)),
                ("cluster", fields.CharField(null=True, max_length=512)),
            ],
            options={
                "table": "hub_sheet_match",
                "app": "node",
                "pk_attr": "sheet_pk",
                "table_description": "Duplicate detection key of a harvested sheet and its cluster.",
                "indexes": [Index(fields=["block"], name="hub_sheet_match_block")],
            },
            bases=["Model"],
        ),
        ops.RunSQL(
            [
                "INSERT INTO hub_sheet_match (sheet_pk, uri, source, block, title_key, cluster)"
                " SELECT sheet_pk, uri, source, block, title_key, cluster FROM hub_sheet_match_0011",
                "DROP TABLE hub_sheet_match_0011",
                "CREATE INDEX hub_sheet_match_cluster ON hub_sheet_match (cluster) WHERE cluster IS NOT NULL",
            ],
            reverse_sql="DROP INDEX hub_sheet_match_cluster",
        ),
    ]

from tortoise import migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    """Tombstones get a partial index of their own.

    ``sheet_counts`` counted the live sheets as their ``oai_dc`` fragments; a hub now stores no
    fragments (its provider renders them when serving), so the live sheets are all rows minus the
    tombstones, and the tombstones are counted on this index (same on SQLite and PostgreSQL).
    """

    dependencies = [("node", "0008_hub_feeds")]

    initial = False

    operations = [
        ops.RunSQL(
            "CREATE INDEX sheet_tombstone ON sheet (pk_id) WHERE deleted",
            reverse_sql="DROP INDEX sheet_tombstone",
        ),
    ]

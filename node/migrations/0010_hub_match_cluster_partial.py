from tortoise import migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    """The index of duplicate clusters holds only the sheets in a cluster.

    Most harvested sheets are listed by one source only (``cluster`` NULL), and the index is only
    searched for a cluster id (the "also listed by" list): a partial index leaves the others out,
    and a harvest writes one random-key index entry fewer for each of them.
    """

    dependencies = [("node", "0009_hub_formats_on_read")]

    initial = False

    operations = [
        ops.RemoveIndex(model_name="HubSheetMatch", name="hub_sheet_match_cluster"),
        ops.RunSQL(
            "CREATE INDEX hub_sheet_match_cluster ON hub_sheet_match (cluster) WHERE cluster IS NOT NULL",
            reverse_sql="DROP INDEX hub_sheet_match_cluster",
        ),
    ]

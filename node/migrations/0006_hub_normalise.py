from tortoise import fields, migrations
from tortoise.indexes import Index
from tortoise.migrations import operations as ops


def _pk() -> tuple[str, fields.BigIntField]:
    return ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True))


class Migration(migrations.Migration):
    dependencies = [("node", "0005_federation_feeds")]

    initial = False

    operations = [
        ops.AddField("HarvestSource", "config", fields.TextField(null=True, unique=False)),
        ops.AddField("HarvestSource", "info", fields.TextField(null=True, unique=False)),
        ops.AddField("HarvestSource", "fetch_state", fields.TextField(null=True, unique=False)),
        ops.CreateModel(
            name="HubCrosswalk",
            fields=[
                _pk(),
                ("source", fields.CharField(max_length=128)),
                ("tag_key", fields.CharField(max_length=255)),
                ("tag", fields.CharField(max_length=255)),
                ("codes", fields.TextField(unique=False)),
                ("updated", fields.BigIntField(default=0)),
            ],
            options={
                "table": "hub_crosswalk",
                "app": "node",
                "unique_together": (("source", "tag_key"),),
                "pk_attr": "id",
                "table_description": "The hub operator's rule: a partner tag of one source → taxonomy codes.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="HubUnmappedTag",
            fields=[
                _pk(),
                ("source", fields.CharField(max_length=128)),
                ("tag_key", fields.CharField(max_length=255)),
                ("tag", fields.CharField(max_length=255)),
                ("occurrences", fields.IntField(default=0)),
                ("first_seen", fields.BigIntField(default=0)),
                ("last_seen", fields.BigIntField(default=0)),
                ("example", fields.CharField(default="", max_length=512)),
            ],
            options={
                "table": "hub_unmapped_tag",
                "app": "node",
                "unique_together": (("source", "tag_key"),),
                "pk_attr": "id",
                "table_description": "A harvested tag no crosswalk rule maps: the hub operator's queue.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="HubSheetMatch",
            fields=[
                _pk(),
                ("uri", fields.CharField(unique=True, max_length=512)),
                ("source", fields.CharField(max_length=128)),
                ("block", fields.CharField(max_length=255)),
                ("title_key", fields.TextField(unique=False)),
                ("cluster", fields.CharField(null=True, max_length=512)),
            ],
            options={
                "table": "hub_sheet_match",
                "app": "node",
                "pk_attr": "id",
                "indexes": [
                    Index(fields=["block"], name="hub_sheet_match_block"),
                    Index(fields=["cluster"], name="hub_sheet_match_cluster"),
                ],
                "table_description": "Duplicate detection key of a harvested sheet and its cross-source cluster.",
            },
            bases=["Model"],
        ),
    ]

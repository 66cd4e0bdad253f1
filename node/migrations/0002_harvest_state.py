from tortoise import fields, migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("node", "0001_initial")]

    initial = False

    operations = [
        ops.CreateModel(
            name="HarvestState",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("source", fields.CharField(max_length=128)),
                ("set_spec", fields.CharField(default="", max_length=128)),
                ("prefix", fields.CharField(max_length=32)),
                ("base_url", fields.CharField(max_length=512)),
                ("token", fields.TextField(null=True, unique=False)),
                ("run_started", fields.CharField(null=True, max_length=32)),
                ("run_pages", fields.IntField(default=0)),
                ("next_from", fields.CharField(null=True, max_length=32)),
                ("last_complete", fields.BigIntField(null=True)),
                ("last_error", fields.TextField(null=True, unique=False)),
                ("last_error_at", fields.BigIntField(null=True)),
                ("generation", fields.BigIntField(default=0)),
                ("updated", fields.BigIntField(default=0)),
            ],
            options={
                "table": "harvest_state",
                "app": "node",
                "unique_together": (("source", "set_spec", "prefix"),),
                "pk_attr": "id",
                "table_description": "Checkpoint of the harvest of one (source, set, metadataPrefix) (ARCHITECTURE §2.9).",
            },
            bases=["Model"],
        ),
    ]

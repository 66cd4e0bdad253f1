from tortoise import fields, migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("node", "0003_federation")]

    initial = False

    operations = [
        ops.CreateModel(
            name="HarvestSource",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("key", fields.CharField(unique=True, max_length=128)),
                ("base_url", fields.CharField(max_length=512)),
                ("kind", fields.CharField(default="essaim", max_length=16)),
                ("prefix", fields.CharField(default="essaim", max_length=32)),
                ("set_spec", fields.CharField(default="", max_length=128)),
                ("name", fields.CharField(default="", max_length=255)),
                ("granularity", fields.CharField(default="seconds", max_length=16)),
                ("interval", fields.IntField(default=3600)),
                ("enabled", fields.BooleanField(default=True)),
                ("next_run", fields.BigIntField(default=0)),
                ("last_run", fields.BigIntField(null=True)),
                ("last_stats", fields.TextField(null=True, unique=False)),
                ("last_error", fields.TextField(null=True, unique=False)),
                ("running_by", fields.CharField(null=True, max_length=128)),
                ("claimed_until", fields.BigIntField(default=0)),
                ("created", fields.BigIntField(default=0)),
            ],
            options={
                "table": "harvest_source",
                "app": "node",
                "pk_attr": "id",
                "table_description": "A source the hub harvests (``essaim hub sources``), and the scheduler's claim on it.",
            },
            bases=["Model"],
        ),
    ]

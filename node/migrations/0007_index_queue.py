from tortoise import fields, migrations
from tortoise.indexes import Index
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("node", "0006_hub_normalise")]

    initial = False

    operations = [
        ops.CreateModel(
            name="IndexQueueRow",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("sheet_pk", fields.BigIntField()),
                ("uri", fields.CharField(max_length=512)),
                ("enqueued", fields.BigIntField()),
                ("status", fields.CharField(default="pending", max_length=16)),
                ("attempts", fields.IntField(default=0)),
                ("next_attempt", fields.BigIntField(default=0)),
                ("claimed_by", fields.CharField(null=True, max_length=64)),
                ("claimed_until", fields.BigIntField(default=0)),
                ("last_error", fields.TextField(null=True, unique=False)),
            ],
            options={
                "table": "index_queue",
                "app": "node",
                "pk_attr": "id",
                "table_description": "One pending search-index operation (a sheet changed).",
                "indexes": [Index(fields=["status", "next_attempt"], name="index_queue_due")],
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="IndexState",
            fields=[
                ("key", fields.CharField(primary_key=True, unique=True, db_index=True, max_length=64)),
                ("value", fields.TextField(default="", unique=False)),
                ("updated", fields.BigIntField(default=0)),
            ],
            options={
                "table": "index_state",
                "app": "node",
                "pk_attr": "key",
                "table_description": "Small shared state of the search index.",
            },
            bases=["Model"],
        ),
    ]

from tortoise import fields, migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("node", "0007_index_queue")]

    initial = False

    operations = [
        ops.CreateModel(
            name="HubPushSource",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("source", fields.CharField(unique=True, max_length=128)),
                ("actor", fields.CharField(max_length=512, db_index=True)),
                ("kind", fields.CharField(default="node", max_length=16)),
                ("repo_id", fields.CharField(max_length=255)),
                ("follow_id", fields.CharField(null=True, max_length=512)),
                ("followed", fields.BigIntField(default=0)),
                ("baseline", fields.BigIntField(default=0)),
                ("pushed", fields.BigIntField(default=0)),
                ("last_push", fields.BigIntField(default=0)),
                ("last_error", fields.TextField(null=True, unique=False)),
            ],
            options={
                "table": "hub_push_source",
                "app": "node",
                "pk_attr": "id",
                "table_description": "An Essaim node whose actor the hub follows (real-time ingest).",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="HubFeedQueue",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("sheet_uri", fields.CharField(max_length=512)),
                ("enqueued", fields.BigIntField()),
            ],
            options={
                "table": "hub_feed_queue",
                "app": "node",
                "pk_attr": "id",
                "table_description": "A harvested or pushed sheet changed: the hub feed actors look at it.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="HubSavedSearch",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("code", fields.CharField(unique=True, max_length=64)),
                ("username", fields.CharField(unique=True, max_length=100)),
                ("label", fields.CharField(max_length=255)),
                ("query", fields.TextField(unique=False)),
                ("created", fields.BigIntField()),
            ],
            options={
                "table": "hub_saved_search",
                "app": "node",
                "pk_attr": "id",
                "table_description": "A saved search with its own feed actor (a normalised search query string).",
            },
            bases=["Model"],
        ),
    ]

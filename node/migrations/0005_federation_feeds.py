from tortoise import fields, migrations
from tortoise.migrations import operations as ops


def _pk() -> tuple[str, fields.Field]:
    return ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True))


def _options(table: str, description: str, **extra: object) -> dict[str, object]:
    return {"table": table, "app": "node", "pk_attr": "id", "table_description": description, **extra}


class Migration(migrations.Migration):
    dependencies = [("node", "0004_hub_sources")]

    initial = False

    operations = [
        ops.CreateModel(
            name="ApFeedFollower",
            fields=[
                _pk(),
                ("feed", fields.CharField(max_length=64)),
                ("actor", fields.CharField(max_length=512)),
                ("inbox", fields.CharField(max_length=512)),
                ("shared_inbox", fields.CharField(null=True, max_length=512)),
                ("follow_id", fields.CharField(max_length=512)),
                ("follow", fields.TextField(unique=False)),
                ("status", fields.CharField(default="accepted", max_length=16)),
                ("created", fields.BigIntField()),
            ],
            options=_options(
                "ap_feed_follower",
                "A remote actor following one of the node's feed actors (``feed``: the theme code).",
                unique_together=(("feed", "actor"),),
            ),
            bases=["Model"],
        ),
        ops.CreateModel(
            name="ApFeedItem",
            fields=[
                _pk(),
                ("feed", fields.CharField(max_length=64)),
                ("sheet_uri", fields.CharField(max_length=512)),
                ("activity_id", fields.BigIntField()),
                ("created", fields.BigIntField()),
            ],
            options=_options(
                "ap_feed_item",
                "A sheet a feed actor announced (its ``Announce`` in ap_activity): the feed's outbox and featured.",
                unique_together=(("feed", "sheet_uri"),),
            ),
            bases=["Model"],
        ),
        ops.CreateModel(
            name="ApDomain",
            fields=[
                _pk(),
                ("host", fields.CharField(unique=True, max_length=255)),
                ("failures", fields.IntField(default=0)),
                ("failing_since", fields.BigIntField(null=True)),
                ("last_failure", fields.BigIntField(null=True)),
                ("last_success", fields.BigIntField(null=True)),
                ("last_probe", fields.BigIntField(null=True)),
                ("available", fields.BooleanField(default=True)),
                ("last_error", fields.TextField(null=True, unique=False)),
            ],
            options=_options(
                "ap_domain",
                "Delivery health of a remote host: failing for days, it is unavailable and its deliveries paused.",
            ),
            bases=["Model"],
        ),
    ]

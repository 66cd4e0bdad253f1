from tortoise import fields, migrations
from tortoise.indexes import Index
from tortoise.migrations import operations as ops


def _pk() -> tuple[str, fields.Field]:
    return ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True))


def _options(table: str, description: str, **extra: object) -> dict[str, object]:
    return {"table": table, "app": "node", "pk_attr": "id", "table_description": description, **extra}


class Migration(migrations.Migration):
    dependencies = [("node", "0002_harvest_state")]

    initial = False

    operations = [
        ops.CreateModel(
            name="ApActivity",
            fields=[
                _pk(),
                ("uri", fields.CharField(unique=True, max_length=512)),
                ("kind", fields.CharField(max_length=32)),
                ("object_uri", fields.CharField(null=True, max_length=512)),
                ("public", fields.BooleanField(default=True)),
                ("payload", fields.TextField(unique=False)),
                ("created", fields.BigIntField()),
            ],
            options=_options(
                "ap_activity", "An activity of our outbox (or an Accept / Follow we sent), served at its id."
            ),
            bases=["Model"],
        ),
        ops.CreateModel(
            name="ApDelivery",
            fields=[
                _pk(),
                ("activity_id", fields.BigIntField()),
                ("inbox", fields.CharField(max_length=512)),
                ("host", fields.CharField(max_length=255)),
                ("status", fields.CharField(default="pending", max_length=16)),
                ("attempts", fields.IntField(default=0)),
                ("next_attempt", fields.BigIntField(default=0)),
                ("created", fields.BigIntField()),
                ("last_error", fields.TextField(null=True, unique=False)),
            ],
            options=_options(
                "ap_delivery",
                "One POST of an activity to one inbox, the queue of the delivery worker.",
                unique_together=(("activity_id", "inbox"),),
                indexes=[Index(fields=["status", "next_attempt"], name="ap_delivery_due")],
            ),
            bases=["Model"],
        ),
        ops.CreateModel(
            name="ApFollower",
            fields=[
                _pk(),
                ("actor", fields.CharField(unique=True, max_length=512)),
                ("inbox", fields.CharField(max_length=512)),
                ("shared_inbox", fields.CharField(null=True, max_length=512)),
                ("follow_id", fields.CharField(max_length=512)),
                ("follow", fields.TextField(unique=False)),
                ("status", fields.CharField(default="accepted", max_length=16)),
                ("created", fields.BigIntField()),
            ],
            options=_options(
                "ap_follower", "A remote actor following the node actor (``status``: accepted | pending)."
            ),
            bases=["Model"],
        ),
        ops.CreateModel(
            name="ApFollowing",
            fields=[
                _pk(),
                ("actor", fields.CharField(unique=True, max_length=512)),
                ("follow_id", fields.CharField(unique=True, max_length=512)),
                ("status", fields.CharField(default="pending", max_length=16)),
                ("created", fields.BigIntField()),
            ],
            options=_options(
                "ap_following", "A remote actor the node actor follows (``status``: pending | accepted | rejected)."
            ),
            bases=["Model"],
        ),
        ops.CreateModel(
            name="ApRemoteActor",
            fields=[
                _pk(),
                ("key_id", fields.CharField(unique=True, max_length=512)),
                ("actor", fields.CharField(max_length=512)),
                ("public_key_pem", fields.TextField(unique=False)),
                ("inbox", fields.CharField(null=True, max_length=512)),
                ("shared_inbox", fields.CharField(null=True, max_length=512)),
                ("username", fields.CharField(null=True, max_length=255)),
                ("fetched", fields.BigIntField()),
            ],
            options=_options(
                "ap_remote_actor",
                "Cache of a remote actor's public key and inboxes (re-fetched once when a signature fails).",
            ),
            bases=["Model"],
        ),
        ops.CreateModel(
            name="ApInbox",
            fields=[
                _pk(),
                ("uri", fields.CharField(unique=True, max_length=512)),
                ("actor", fields.CharField(max_length=512)),
                ("kind", fields.CharField(max_length=32)),
                ("object_uri", fields.CharField(null=True, max_length=512)),
                ("payload", fields.TextField(unique=False)),
                ("received", fields.BigIntField()),
            ],
            options=_options(
                "ap_inbox", "An activity received and verified (signature, signer = actor, object on the actor's host)."
            ),
            bases=["Model"],
        ),
        ops.CreateModel(
            name="ApMessage",
            fields=[
                _pk(),
                ("uri", fields.CharField(unique=True, max_length=512)),
                ("actor", fields.CharField(max_length=512)),
                ("in_reply_to", fields.CharField(max_length=512)),
                ("content", fields.TextField(default="", unique=False)),
                ("payload", fields.TextField(unique=False)),
                ("received", fields.BigIntField()),
                ("read", fields.BooleanField(default=False)),
            ],
            options=_options(
                "ap_message", "A reply (``Create(Note)`` with ``inReplyTo`` one of our sheets), kept for the admin."
            ),
            bases=["Model"],
        ),
    ]

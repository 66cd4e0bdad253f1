from tortoise import fields, migrations
from tortoise.indexes import Index
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    initial = True

    operations = [
        ops.CreateModel(
            name="AdminUser",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("email", fields.CharField(unique=True, max_length=254)),
                ("password_hash", fields.CharField(max_length=255)),
                ("created", fields.BigIntField()),
            ],
            options={
                "table": "admin_user",
                "app": "node",
                "pk_attr": "id",
                "table_description": "A person who signs in to the server-rendered admin (password hashed with scrypt).",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="ApiToken",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("name", fields.CharField(unique=True, max_length=128)),
                ("token_hash", fields.CharField(unique=True, max_length=64)),
                ("created", fields.BigIntField()),
                ("last_used", fields.BigIntField(null=True)),
                ("revoked", fields.BooleanField(default=False)),
            ],
            options={
                "table": "api_token",
                "app": "node",
                "pk_attr": "id",
                "table_description": "Bearer tokens of the admin API (only a SHA-256 of the secret is kept: table comments must not hold semicolons, Tortoise splits statements on them).",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="ImportRun",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("started", fields.BigIntField()),
                ("finished", fields.BigIntField(null=True)),
                ("filename", fields.CharField(max_length=255)),
                ("mapping", fields.CharField(max_length=128)),
                ("dry_run", fields.BooleanField(default=False)),
                ("ok", fields.BooleanField(default=False)),
                ("report", fields.TextField(unique=False)),
            ],
            options={
                "table": "import_run",
                "app": "node",
                "pk_attr": "id",
                "table_description": "The report of one import, kept so the admin can read it later.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="Setting",
            fields=[
                ("key", fields.CharField(primary_key=True, unique=True, db_index=True, max_length=128)),
                ("value", fields.TextField(unique=False)),
            ],
            options={
                "table": "setting",
                "app": "node",
                "pk_attr": "key",
                "table_description": "Runtime options changed from the admin (deploy-time settings live in the settings file).",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="SheetFormat",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("sheet_pk", fields.BigIntField()),
                ("prefix", fields.CharField(max_length=32)),
                ("xml", fields.TextField(unique=False)),
            ],
            options={
                "table": "sheet_format",
                "app": "node",
                "unique_together": (("sheet_pk", "prefix"),),
                "pk_attr": "id",
                "table_description": "A record's metadata rendered once per format when the sheet changes (an OAI page is a join).",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="SheetRow",
            fields=[
                ("pk_id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("uri", fields.CharField(unique=True, max_length=512)),
                ("source", fields.CharField(default="", max_length=128)),
                ("local_id", fields.CharField(max_length=255)),
                ("stamp", fields.BigIntField()),
                ("deleted", fields.BooleanField(default=False)),
                ("content_hash", fields.CharField(default="", max_length=64)),
                ("title", fields.TextField(default="", unique=False)),
                ("data", fields.TextField(null=True, unique=False)),
                ("sets", fields.TextField(default="", unique=False)),
                ("provenance", fields.TextField(null=True, unique=False)),
            ],
            options={
                "table": "sheet",
                "app": "node",
                "unique_together": (("source", "local_id"),),
                "indexes": [Index(fields=["stamp", "pk_id"], name="sheet_stamp_pk")],
                "pk_attr": "pk_id",
                "table_description": "One sheet, or its tombstone when ``deleted``.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="SheetSet",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("sheet_pk", fields.BigIntField()),
                ("spec", fields.CharField(max_length=128)),
                ("stamp", fields.BigIntField()),
            ],
            options={
                "table": "sheet_set",
                "app": "node",
                "unique_together": (("sheet_pk", "spec"),),
                "indexes": [Index(fields=["spec", "stamp", "sheet_pk"], name="sheet_set_keyset")],
                "pk_attr": "id",
                "table_description": "Set membership with the datestamp copied in, so that selective OAI harvests page by keyset.",
            },
            bases=["Model"],
        ),
    ]

from typing import Any

from tortoise import migrations
from tortoise.migrations import operations as ops

# SQLite only. Set memberships live in a table clustered on the keyset the OAI provider reads
# (spec, stamp, sheet_pk): each membership is written to two B-trees instead of three (the rowid
# table, its unique index and the keyset index), and the table is ~35 % smaller.
_SETS_FORWARD = (
    'CREATE TABLE "sheet_set_0012" ("spec" VARCHAR(128) NOT NULL, "stamp" BIGINT NOT NULL,'
    ' "sheet_pk" BIGINT NOT NULL, PRIMARY KEY ("spec", "stamp", "sheet_pk")) WITHOUT ROWID',
    'INSERT INTO "sheet_set_0012" ("spec", "stamp", "sheet_pk")'
    ' SELECT "spec", "stamp", "sheet_pk" FROM "sheet_set" ORDER BY "spec", "stamp", "sheet_pk"',
    'DROP TABLE "sheet_set"',
    'ALTER TABLE "sheet_set_0012" RENAME TO "sheet_set"',
    'CREATE UNIQUE INDEX "sheet_set_sheet" ON "sheet_set" ("sheet_pk", "spec")',
)
_SETS_BACKWARD = (
    'CREATE TABLE "sheet_set_0012" ("id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, "sheet_pk" BIGINT NOT NULL,'
    ' "spec" VARCHAR(128) NOT NULL, "stamp" BIGINT NOT NULL,'
    ' CONSTRAINT "uid_sheet_set_sheet_p_bc6aab" UNIQUE ("sheet_pk", "spec"))',
    'INSERT INTO "sheet_set_0012" ("sheet_pk", "spec", "stamp") SELECT "sheet_pk", "spec", "stamp" FROM "sheet_set"',
    'DROP TABLE "sheet_set"',
    'ALTER TABLE "sheet_set_0012" RENAME TO "sheet_set"',
    'CREATE INDEX "sheet_set_keyset" ON "sheet_set" ("spec", "stamp", "sheet_pk")',
)
# SQLite only. A harvest reads the blocks it writes in grouped by (source, title): an index that
# covers the whole query answers it in index order, where the index on the block alone fetched
# every row from the table and sorted the groups (~4x slower in the hub bench). PostgreSQL keeps
# the index on the block: its B-tree entries are limited to ~2.7 KB, and a title has no limit.
_MATCH_FORWARD = (
    'CREATE INDEX "hub_sheet_match_group" ON "hub_sheet_match" ("block", "source", "title_key", "cluster", "uri")',
    'DROP INDEX "hub_sheet_match_block"',
)
_MATCH_BACKWARD = (
    'CREATE INDEX "hub_sheet_match_block" ON "hub_sheet_match" ("block")',
    'DROP INDEX "hub_sheet_match_group"',
)


def _on_sqlite(*statements: str) -> Any:
    async def run(apps: Any, editor: Any) -> None:
        if editor.client.capabilities.dialect != "sqlite":
            return
        for sql in statements:
            await editor.client.execute_query(sql)

    return run


class Migration(migrations.Migration):
    """SQLite: set memberships in a table clustered on the provider's keyset; duplicate blocks read
    through a covering index. PostgreSQL is left as it is (see the statements' comments)."""

    dependencies = [("node", "0011_hub_match_by_sheet")]

    initial = False

    operations = [
        ops.RunPython(_on_sqlite(*_SETS_FORWARD), _on_sqlite(*_SETS_BACKWARD)),
        ops.RunPython(_on_sqlite(*_MATCH_FORWARD), _on_sqlite(*_MATCH_BACKWARD)),
    ]

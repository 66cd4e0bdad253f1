"""Database tables of a node (and of the hub, which is a node too).

Hot paths (import, OAI-PMH paging) use plain SQL over these tables through the
same Tortoise connection; the models define the schema, its migrations and the
admin's CRUD. Time is stored as integer UTC epoch seconds (``stamp``): second
precision is what OAI-PMH needs, integers index and compare fastest on both
SQLite and PostgreSQL, and nobody has to think about time zones in SQL.
"""

from __future__ import annotations

from tortoise import fields
from tortoise.indexes import Index
from tortoise.models import Model


class SheetRow(Model):
    """One sheet, or its tombstone when ``deleted``."""

    pk_id = fields.BigIntField(primary_key=True)
    uri = fields.CharField(max_length=512, unique=True)
    # '' for the node's own sheets; the hub stores the harvested source's key here.
    source = fields.CharField(max_length=128, default="")
    local_id = fields.CharField(max_length=255)
    stamp = fields.BigIntField()  # UTC epoch seconds of the last effective change
    deleted = fields.BooleanField(default=False)
    content_hash = fields.CharField(max_length=64, default="")
    title = fields.TextField(default="")  # denormalised for the admin list and search-as-you-type
    data = fields.TextField(null=True)  # canonical JSON (protocol.sheet.sheet_to_dict); NULL for a tombstone
    sets = fields.TextField(default="")  # space-separated OAI setSpecs, for headers
    provenance = fields.TextField(null=True)  # JSON: where a harvested record came from

    class Meta:
        table = "sheet"
        unique_together = (("source", "local_id"),)
        # Also sheet_tombstone, on the pk of deleted rows only (a partial index: created by migration 0009).
        indexes = (Index(fields=("stamp", "pk_id"), name="sheet_stamp_pk"),)


class SheetSet(Model):
    """Set membership with the datestamp copied in, so that selective OAI harvests page by keyset.

    On SQLite, migration 0012 makes this a table clustered on the keyset (``WITHOUT ROWID``, primary
    key (spec, stamp, sheet_pk), unique index ``sheet_set_sheet`` on (sheet_pk, spec)), which Tortoise
    models cannot declare: the ``id`` column exists on PostgreSQL only, and no code reads it.
    """

    id = fields.BigIntField(primary_key=True)
    sheet_pk = fields.BigIntField()
    spec = fields.CharField(max_length=128)
    stamp = fields.BigIntField()

    class Meta:
        table = "sheet_set"
        unique_together = (("sheet_pk", "spec"),)
        indexes = (Index(fields=("spec", "stamp", "sheet_pk"), name="sheet_set_keyset"),)


class SheetFormat(Model):
    """A record's metadata rendered once per format when the sheet changes (an OAI page is a join)."""

    id = fields.BigIntField(primary_key=True)
    sheet_pk = fields.BigIntField()
    prefix = fields.CharField(max_length=32)
    xml = fields.TextField()

    class Meta:
        table = "sheet_format"
        unique_together = (("sheet_pk", "prefix"),)


class ApiToken(Model):
    """Bearer tokens of the admin API (only a SHA-256 of the secret is kept).

    Table comments must not hold semicolons: Tortoise splits statements on them.
    """

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=128, unique=True)
    token_hash = fields.CharField(max_length=64, unique=True)
    created = fields.BigIntField()
    last_used = fields.BigIntField(null=True)
    revoked = fields.BooleanField(default=False)

    class Meta:
        table = "api_token"


class AdminUser(Model):
    """A person who signs in to the server-rendered admin (password hashed with scrypt)."""

    id = fields.IntField(primary_key=True)
    email = fields.CharField(max_length=254, unique=True)
    password_hash = fields.CharField(max_length=255)
    created = fields.BigIntField()

    class Meta:
        table = "admin_user"


class ImportRun(Model):
    """The report of one import, kept so the admin can read it later."""

    id = fields.IntField(primary_key=True)
    started = fields.BigIntField()
    finished = fields.BigIntField(null=True)
    filename = fields.CharField(max_length=255)
    mapping = fields.CharField(max_length=128)
    dry_run = fields.BooleanField(default=False)
    ok = fields.BooleanField(default=False)
    report = fields.TextField()  # JSON

    class Meta:
        table = "import_run"


class Setting(Model):
    """Runtime options changed from the admin (deploy-time settings live in the settings file)."""

    key = fields.CharField(max_length=128, primary_key=True)
    value = fields.TextField()

    class Meta:
        table = "setting"


class HarvestState(Model):
    """Checkpoint of the harvest of one (source, set, metadataPrefix) (ARCHITECTURE §2.9).

    ``token`` is the resumption token of the next page of the run in progress (NULL when
    no run is in progress); it is written in the same transaction as the records of the
    page that carried it, so a crashed harvest resumes after the last committed page.
    ``next_from`` is the responseDate of the first page of the last complete run: the
    ``from`` of the next incremental run. ``generation`` moves on every checkpoint so a
    second harvester of the same source cannot commit over the first one's pages.
    """

    id = fields.BigIntField(primary_key=True)
    source = fields.CharField(max_length=128)
    set_spec = fields.CharField(max_length=128, default="")
    prefix = fields.CharField(max_length=32)
    base_url = fields.CharField(max_length=512)
    token = fields.TextField(null=True)
    run_started = fields.CharField(max_length=32, null=True)  # responseDate of the run in progress
    run_pages = fields.IntField(default=0)
    next_from = fields.CharField(max_length=32, null=True)
    last_complete = fields.BigIntField(null=True)  # UTC epoch seconds
    last_error = fields.TextField(null=True)
    last_error_at = fields.BigIntField(null=True)
    generation = fields.BigIntField(default=0)
    updated = fields.BigIntField(default=0)

    class Meta:
        table = "harvest_state"
        unique_together = (("source", "set_spec", "prefix"),)


class HarvestSource(Model):
    """A source the hub harvests (``essaim hub sources``), and the scheduler's claim on it.

    ``kind`` is ``essaim`` for an Essaim node (native ``essaim`` metadata) or ``oai`` for
    any other OAI-PMH 2.0 provider (``oai_dc``). ``next_run`` is when the scheduler runs
    it next (UTC epoch seconds); ``running_by`` / ``claimed_until`` are the claim of the
    worker harvesting it, which lapses by itself if that worker dies.
    """

    id = fields.BigIntField(primary_key=True)
    key = fields.CharField(max_length=128, unique=True)  # the ``source`` column of harvested sheets
    base_url = fields.CharField(max_length=512)
    kind = fields.CharField(max_length=16, default="essaim")
    prefix = fields.CharField(max_length=32, default="essaim")
    set_spec = fields.CharField(max_length=128, default="")
    name = fields.CharField(max_length=255, default="")
    granularity = fields.CharField(max_length=16, default="seconds")
    interval = fields.IntField(default=3600)  # seconds between runs
    enabled = fields.BooleanField(default=True)
    next_run = fields.BigIntField(default=0)
    last_run = fields.BigIntField(null=True)
    last_stats = fields.TextField(null=True)  # JSON of the last run's HarvestStats
    last_error = fields.TextField(null=True)
    running_by = fields.CharField(max_length=128, null=True)
    claimed_until = fields.BigIntField(default=0)
    created = fields.BigIntField(default=0)
    config = fields.TextField(null=True)  # JSON: kind-specific settings (file: url + mapping; crawl: sitemap...)
    info = fields.TextField(null=True)  # JSON: what probing found (Identify, NodeInfo)
    fetch_state = fields.TextField(null=True)  # JSON: validators of the last complete file / crawl run

    class Meta:
        table = "harvest_source"


class ApActivity(Model):
    """An activity of our outbox (or an Accept / Follow we sent), served at its id."""

    id = fields.BigIntField(primary_key=True)
    uri = fields.CharField(max_length=512, unique=True)
    kind = fields.CharField(max_length=32)
    object_uri = fields.CharField(max_length=512, null=True)
    public = fields.BooleanField(default=True)  # listed in the outbox (Accept / Follow are not)
    payload = fields.TextField()  # JSON
    created = fields.BigIntField()

    class Meta:
        table = "ap_activity"


class ApDelivery(Model):
    """One POST of an activity to one inbox; the queue of the delivery worker."""

    id = fields.BigIntField(primary_key=True)
    activity_id = fields.BigIntField()
    inbox = fields.CharField(max_length=512)
    host = fields.CharField(max_length=255)
    status = fields.CharField(max_length=16, default="pending")  # pending | done | failed
    attempts = fields.IntField(default=0)
    next_attempt = fields.BigIntField(default=0)
    created = fields.BigIntField()
    last_error = fields.TextField(null=True)

    class Meta:
        table = "ap_delivery"
        unique_together = (("activity_id", "inbox"),)
        indexes = (Index(fields=("status", "next_attempt"), name="ap_delivery_due"),)


class ApFollower(Model):
    """A remote actor following the node actor (``status``: accepted | pending)."""

    id = fields.BigIntField(primary_key=True)
    actor = fields.CharField(max_length=512, unique=True)
    inbox = fields.CharField(max_length=512)
    shared_inbox = fields.CharField(max_length=512, null=True)
    follow_id = fields.CharField(max_length=512)
    follow = fields.TextField()  # JSON of the Follow, embedded in the Accept
    status = fields.CharField(max_length=16, default="accepted")
    created = fields.BigIntField()

    class Meta:
        table = "ap_follower"


class ApFollowing(Model):
    """A remote actor the node actor follows (``status``: pending | accepted | rejected)."""

    id = fields.BigIntField(primary_key=True)
    actor = fields.CharField(max_length=512, unique=True)
    follow_id = fields.CharField(max_length=512, unique=True)
    status = fields.CharField(max_length=16, default="pending")
    created = fields.BigIntField()

    class Meta:
        table = "ap_following"


class ApRemoteActor(Model):
    """Cache of a remote actor's public key and inboxes (re-fetched once when a signature fails)."""

    id = fields.BigIntField(primary_key=True)
    key_id = fields.CharField(max_length=512, unique=True)
    actor = fields.CharField(max_length=512)
    public_key_pem = fields.TextField()
    inbox = fields.CharField(max_length=512, null=True)
    shared_inbox = fields.CharField(max_length=512, null=True)
    username = fields.CharField(max_length=255, null=True)
    fetched = fields.BigIntField()

    class Meta:
        table = "ap_remote_actor"


class ApInbox(Model):
    """An activity received and verified (signature, signer = actor, object on the actor's host)."""

    id = fields.BigIntField(primary_key=True)
    uri = fields.CharField(max_length=512, unique=True)
    actor = fields.CharField(max_length=512)
    kind = fields.CharField(max_length=32)
    object_uri = fields.CharField(max_length=512, null=True)
    payload = fields.TextField()  # JSON
    received = fields.BigIntField()

    class Meta:
        table = "ap_inbox"


class ApMessage(Model):
    """A reply (``Create(Note)`` with ``inReplyTo`` one of our sheets), kept for the admin."""

    id = fields.BigIntField(primary_key=True)
    uri = fields.CharField(max_length=512, unique=True)
    actor = fields.CharField(max_length=512)
    in_reply_to = fields.CharField(max_length=512)
    content = fields.TextField(default="")
    payload = fields.TextField()  # JSON
    received = fields.BigIntField()
    read = fields.BooleanField(default=False)

    class Meta:
        table = "ap_message"


class ApFeedFollower(Model):
    """A remote actor following one of the node's feed actors (``feed``: the theme code)."""

    id = fields.BigIntField(primary_key=True)
    feed = fields.CharField(max_length=64)
    actor = fields.CharField(max_length=512)
    inbox = fields.CharField(max_length=512)
    shared_inbox = fields.CharField(max_length=512, null=True)
    follow_id = fields.CharField(max_length=512)
    follow = fields.TextField()  # JSON of the Follow, embedded in the Accept
    status = fields.CharField(max_length=16, default="accepted")  # accepted | pending
    created = fields.BigIntField()

    class Meta:
        table = "ap_feed_follower"
        unique_together = (("feed", "actor"),)


class ApFeedItem(Model):
    """A sheet a feed actor announced (its ``Announce`` in ap_activity): the feed's outbox and featured."""

    id = fields.BigIntField(primary_key=True)
    feed = fields.CharField(max_length=64)
    sheet_uri = fields.CharField(max_length=512)
    activity_id = fields.BigIntField()
    created = fields.BigIntField()

    class Meta:
        table = "ap_feed_item"
        unique_together = (("feed", "sheet_uri"),)


class ApDomain(Model):
    """Delivery health of a remote host: failing for days, it is unavailable and its deliveries paused."""

    id = fields.BigIntField(primary_key=True)
    host = fields.CharField(max_length=255, unique=True)
    failures = fields.IntField(default=0)  # failed deliveries in a row
    failing_since = fields.BigIntField(null=True)
    last_failure = fields.BigIntField(null=True)
    last_success = fields.BigIntField(null=True)
    last_probe = fields.BigIntField(null=True)
    available = fields.BooleanField(default=True)
    last_error = fields.TextField(null=True)

    class Meta:
        table = "ap_domain"


class HubCrosswalk(Model):
    """The hub operator's rule: a partner tag of one source (folded) → taxonomy codes (``()`` = ignored)."""

    id = fields.BigIntField(primary_key=True)
    source = fields.CharField(max_length=128)
    tag_key = fields.CharField(max_length=255)  # protocol.taxonomy.fold(tag)
    tag = fields.CharField(max_length=255)  # the spelling the operator saw
    codes = fields.TextField()  # space-separated taxonomy codes, "" for a deliberately ignored tag
    updated = fields.BigIntField(default=0)

    class Meta:
        table = "hub_crosswalk"
        unique_together = (("source", "tag_key"),)


class HubUnmappedTag(Model):
    """A harvested tag that neither the node, the crosswalk nor the taxonomy labels map: the operator's queue."""

    id = fields.BigIntField(primary_key=True)
    source = fields.CharField(max_length=128)
    tag_key = fields.CharField(max_length=255)
    tag = fields.CharField(max_length=255)
    occurrences = fields.IntField(default=0)  # in records written by harvests since first seen
    first_seen = fields.BigIntField(default=0)
    last_seen = fields.BigIntField(default=0)
    example = fields.CharField(max_length=512, default="")  # URI of a sheet carrying it

    class Meta:
        table = "hub_unmapped_tag"
        unique_together = (("source", "tag_key"),)


class HubSheetMatch(Model):
    """Duplicate detection key of a harvested sheet (place + holder block, folded title) and its cluster."""

    sheet_pk = fields.BigIntField(primary_key=True, generated=False)  # the sheet's row (pks grow: rows append)
    uri = fields.CharField(max_length=512)  # the sheet's URI (a cluster id derives from its smallest one)
    source = fields.CharField(max_length=128)
    block = fields.CharField(max_length=255)
    title_key = fields.TextField()
    cluster = fields.CharField(max_length=512, null=True)  # NULL: listed by one source only

    class Meta:
        table = "hub_sheet_match"
        # Also hub_sheet_match_cluster, on the cluster of the rows that have one (a partial index: created
        # by migrations 0010 and 0011, which Tortoise indexes cannot declare for both databases). On
        # SQLite, migration 0012 replaces hub_sheet_match_block by hub_sheet_match_group, covering
        # (block, source, title_key, cluster, uri): the harvest's grouped read of a block.
        indexes = (Index(fields=("block",), name="hub_sheet_match_block"),)


class IndexQueueRow(Model):
    """One pending search-index operation: the sheet ``sheet_pk`` changed (written, or tombstoned).

    Rows are appended in the transaction of the change (``search.indexer.enqueue_listener``)
    and deleted once the index holds the sheet's state read *after* the claim, so a later
    change always has a later row. ``claimed_by`` / ``claimed_until`` are a worker's lease
    (it lapses if the worker dies); ``status`` is ``failed`` once Typesense refused the
    document ``max_attempts`` times (kept for the operator, counted on ``/metrics``).
    """

    id = fields.BigIntField(primary_key=True)
    sheet_pk = fields.BigIntField()
    uri = fields.CharField(max_length=512)
    enqueued = fields.BigIntField()
    status = fields.CharField(max_length=16, default="pending")  # pending | failed
    attempts = fields.IntField(default=0)
    next_attempt = fields.BigIntField(default=0)
    claimed_by = fields.CharField(max_length=64, null=True)
    claimed_until = fields.BigIntField(default=0)
    last_error = fields.TextField(null=True)

    class Meta:
        table = "index_queue"
        indexes = (Index(fields=("status", "next_attempt"), name="index_queue_due"),)


class IndexState(Model):
    """Small shared state of the search index (the collection being rebuilt by a reindex, ...)."""

    key = fields.CharField(max_length=64, primary_key=True)
    value = fields.TextField(default="")
    updated = fields.BigIntField(default=0)

    class Meta:
        table = "index_state"


class HubPushSource(Model):
    """A harvested Essaim node whose actor the hub follows: its Create / Update / Delete are ingested live.

    ``repo_id`` is the node's OAI ``repositoryIdentifier`` (from Identify): a pushed sheet is keyed by
    ``oai:{repo_id}:{local_id}``, the very identifier the harvest uses, so push and harvest write one row.
    """

    id = fields.BigIntField(primary_key=True)
    source = fields.CharField(max_length=128, unique=True)
    actor = fields.CharField(max_length=512, db_index=True)
    kind = fields.CharField(max_length=16, default="node")  # node (its actor) | relay (another hub's relay)
    repo_id = fields.CharField(max_length=255)
    follow_id = fields.CharField(max_length=512, null=True)
    followed = fields.BigIntField(default=0)
    baseline = fields.BigIntField(default=0)  # end of the first complete harvest after the follow
    pushed = fields.BigIntField(default=0)  # activities ingested
    last_push = fields.BigIntField(default=0)
    last_error = fields.TextField(null=True)

    class Meta:
        table = "hub_push_source"


class HubFeedQueue(Model):
    """A harvested or pushed sheet changed (by URI): the hub's feed actors announce or withdraw it.

    Filled by a sheet listener in the writing transaction, drained after the commit, when the
    sheet's provenance (the node's own URI, which the feeds announce) is written too.
    """

    id = fields.BigIntField(primary_key=True)
    sheet_uri = fields.CharField(max_length=512)
    enqueued = fields.BigIntField()

    class Meta:
        table = "hub_feed_queue"


class HubSavedSearch(Model):
    """A saved search of the hub, followable as the feed actor ``/feeds/{code}`` (``query``: a query string)."""

    id = fields.BigIntField(primary_key=True)
    code = fields.CharField(max_length=64, unique=True)
    username = fields.CharField(max_length=100, unique=True)
    label = fields.CharField(max_length=255)
    query = fields.TextField()
    created = fields.BigIntField()

    class Meta:
        table = "hub_saved_search"

"""The partner's federation pages in the French admin: messages about projects, followers to approve.

Replies from the fediverse (``Create(Note)`` ``inReplyTo`` one of our sheets) are
the matchmaking conversation: they are listed per project, newest first, unread
ones marked, with a link to the project and to the author. A follower waiting
under manual approval (``manually_approves_followers``) is accepted or refused
here, which sends the ``Accept`` / ``Reject``. The pages sit under ``/admin``,
so the admin middleware requires a session and checks the CSRF token of each POST.
Remote HTML is never rendered: messages are shown as plain text.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from federation.inbox import answer_follower
from federation.service import FEDERATION, Federation
from node.context import NODE
from protocol.text import html_to_text

routes = web.RouteTableDef()


def _when(stamp: Any) -> str:
    return datetime.fromtimestamp(int(stamp), UTC).strftime("%d/%m/%Y %H:%M") if stamp is not None else ""


async def _pending(fed: Federation) -> list[dict[str, Any]]:
    pending = []
    for local in fed.local_actors():
        table, cond, params = local.followers_sql(alias="f.")
        rows = await fed.db.fetch(
            f"SELECT f.actor, f.created, r.username FROM {table} f LEFT JOIN ap_remote_actor r ON r.actor = f.actor"
            f" WHERE f.status = 'pending' AND {cond} ORDER BY f.id",
            params,
        )
        seen: set[str] = set()
        for row in rows:
            if row["actor"] in seen:  # one remote actor may have several cached keys
                continue
            seen.add(str(row["actor"]))
            pending.append(
                {
                    "actor": row["actor"],
                    "username": row["username"],
                    "when": _when(row["created"]),
                    "feed": local.feed or "",
                    "local": local.name,
                }
            )
    return pending


@routes.get("/admin/federation")
@aiohttp_jinja2.template("admin/federation.html")
async def federation_page(request: web.Request) -> dict[str, Any]:
    fed = request.app[FEDERATION]
    counts = []
    for local in fed.local_actors():
        table, cond, params = local.followers_sql()
        row = await fed.db.fetchone(f"SELECT COUNT(*) AS n FROM {table} WHERE status = 'accepted' AND {cond}", params)
        counts.append({"name": local.name, "handle": f"@{local.username}@{fed.host}", "n": row["n"] if row else 0})
    pending_rows = await fed.db.fetch(
        "SELECT host, COUNT(*) AS n FROM ap_delivery WHERE status = 'pending' GROUP BY host ORDER BY host"
    )
    pending_by_host = {str(r["host"]): int(r["n"]) for r in pending_rows}
    domains = []
    for row in await fed.db.fetch("SELECT * FROM ap_domain ORDER BY available, host"):
        domains.append(
            {
                "host": row["host"],
                "available": bool(row["available"]),
                "failures": row["failures"],
                "since": _when(row["failing_since"]),
                "error": row["last_error"] or "",
                "pending": pending_by_host.get(str(row["host"]), 0),
            }
        )
    unread = await fed.db.fetchone("SELECT COUNT(*) AS n FROM ap_message WHERE read = ?", [False])
    return {
        "pending": await _pending(fed),
        "counts": counts,
        "domains": domains,
        "unread": unread["n"] if unread else 0,
        "manual": fed.conf.manually_approves_followers,
        "done": request.query.get("done", ""),
    }


@routes.post("/admin/federation/followers")
async def answer(request: web.Request) -> web.Response:
    fed = request.app[FEDERATION]
    form = await request.post()
    code = str(form.get("feed", ""))
    local = fed.feeds.get(code) if code else fed.node_actor
    decision = str(form.get("decision", ""))
    if local is None or decision not in ("accept", "reject"):
        raise web.HTTPBadRequest(text="Demande invalide : fil ou décision inconnus.")
    found = await answer_follower(fed, local, str(form.get("actor", "")), accept=decision == "accept")
    if not found:
        raise web.HTTPNotFound(text="Aucune demande d'abonnement en attente pour ce compte.")
    raise web.HTTPSeeOther(f"/admin/federation?done={decision}")


@routes.get("/admin/messages")
@aiohttp_jinja2.template("admin/messages.html")
async def messages(request: web.Request) -> dict[str, Any]:
    """Messages grouped by project (one group per sheet, the most recent conversation first)."""
    fed = request.app[FEDERATION]
    only = request.query.get("sheet")
    sql = (
        "SELECT m.id, m.uri, m.actor, m.in_reply_to, m.content, m.received, m.read, s.title, s.local_id, r.username"
        " FROM ap_message m LEFT JOIN sheet s ON s.uri = m.in_reply_to"
        " LEFT JOIN ap_remote_actor r ON r.actor = m.actor"
    )
    params: list[Any] = []
    if only:
        sql += " WHERE m.in_reply_to = ?"
        params.append(only)
    rows = await fed.db.fetch(sql + " ORDER BY m.received DESC, m.id DESC", params)
    groups: dict[str, dict[str, Any]] = {}
    seen: set[int] = set()
    for row in rows:
        if int(row["id"]) in seen:
            continue
        seen.add(int(row["id"]))
        group = groups.setdefault(
            str(row["in_reply_to"]),
            {
                "uri": row["in_reply_to"],
                "title": row["title"],
                "local_id": row["local_id"],
                "messages": [],
                "unread": 0,
            },
        )
        group["messages"].append(
            {
                "id": row["id"],
                "uri": row["uri"],
                "actor": row["actor"],
                "username": row["username"],
                "text": html_to_text(str(row["content"] or "")),
                "when": _when(row["received"]),
                "read": bool(row["read"]),
            }
        )
        group["unread"] = group.get("unread", 0) + (0 if row["read"] else 1)
    return {"groups": list(groups.values()), "only": only or ""}


@routes.post("/admin/messages/read")
async def mark_read(request: web.Request) -> web.Response:
    fed = request.app[FEDERATION]
    form = await request.post()
    sheet = str(form.get("sheet", ""))
    if not sheet:
        raise web.HTTPBadRequest(text="Demande invalide : projet manquant.")
    await fed.db.execute("UPDATE ap_message SET read = ? WHERE in_reply_to = ?", [True, sheet])
    request.app[NODE].count("admin_messages_read_total")
    raise web.HTTPSeeOther("/admin/messages")

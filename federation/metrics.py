"""Federation's lines on ``/metrics``: its counters, pending deliveries per host, host health, followers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from federation.service import Federation

COUNTER_HELP = {
    "deliveries_done_total": "Deliveries a remote inbox accepted.",
    "delivery_retry_total": "Failed delivery attempts scheduled again.",
    "delivery_failed_total": "Deliveries given up.",
    "inbox_accepted_total": "Inbox activities verified and persisted.",
    "inbox_rejected_total": "Inbox requests refused (size, JSON, signature, actor, host).",
    "outbox_activities_total": "Activities produced by sheet changes.",
}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics_source(fed: Federation) -> Callable[[], Awaitable[list[str]]]:
    async def lines() -> list[str]:
        out: list[str] = []
        for name, value in sorted(fed.stats.items()):
            metric = f"essaim_federation_{name}"
            help_text = COUNTER_HELP.get(name, name.replace("_", " "))
            out += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter", f"{metric} {value}"]
        pending = await fed.db.fetch(
            "SELECT host, COUNT(*) AS n FROM ap_delivery WHERE status = 'pending' GROUP BY host ORDER BY host"
        )
        out += [
            "# HELP essaim_federation_deliveries_pending Deliveries waiting in the queue, per destination host.",
            "# TYPE essaim_federation_deliveries_pending gauge",
        ]
        out += [f'essaim_federation_deliveries_pending{{host="{_label(str(r["host"]))}"}} {r["n"]}' for r in pending]
        domains = await fed.db.fetch("SELECT host, available, failures FROM ap_domain ORDER BY host")
        out += [
            "# HELP essaim_federation_host_available 1 when deliveries to the host flow, 0 when paused.",
            "# TYPE essaim_federation_host_available gauge",
        ]
        out += [
            f'essaim_federation_host_available{{host="{_label(str(r["host"]))}"}} {int(bool(r["available"]))}'
            for r in domains
        ]
        out += [
            "# HELP essaim_federation_host_failures Failed deliveries in a row, per host.",
            "# TYPE essaim_federation_host_failures gauge",
        ]
        out += [f'essaim_federation_host_failures{{host="{_label(str(r["host"]))}"}} {r["failures"]}' for r in domains]
        out += [
            "# HELP essaim_federation_followers Accepted followers, per local actor.",
            "# TYPE essaim_federation_followers gauge",
        ]
        for local in fed.local_actors():
            table, cond, params = local.followers_sql()
            row = await fed.db.fetchone(
                f"SELECT COUNT(*) AS n FROM {table} WHERE status = 'accepted' AND {cond}", params
            )
            out.append(f'essaim_federation_followers{{actor="{_label(local.username)}"}} {row["n"] if row else 0}')
        return out

    return lines

"""Suite-wide checks."""

from __future__ import annotations

import threading

import aiosqlite.core
import pytest


def _open_sqlite_connections() -> list[threading.Thread]:
    """aiosqlite's worker threads still running: one per SQLite connection nobody closed."""
    return [
        t
        for t in threading.enumerate()
        if t.is_alive() and getattr(getattr(t, "_target", None), "__name__", "") == "_connection_worker_thread"
    ]


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run, rather than hang at exit, when a SQLite connection was left open.

    aiosqlite's worker thread is not a daemon: the interpreter waits for it at exit, for ever,
    after pytest has printed its summary. That is a real defect (a CLI command would hang the
    same way), so the run fails and says so; the threads are then told to stop so that the
    process can end.
    """
    leaked = _open_sqlite_connections()
    if not leaked:
        return
    for thread in leaked:
        queue = thread._args[0]  # type: ignore[attr-defined]  # aiosqlite's request queue
        queue.put((None, lambda: aiosqlite.core._STOP_RUNNING_SENTINEL))
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    message = (
        f"{len(leaked)} SQLite connection(s) left open at the end of the run (aiosqlite worker threads): "
        "a Database or SheetStore was not closed"
    )
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_line(message, red=True, bold=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED

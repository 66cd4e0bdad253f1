"""The ``essaim`` command line (``essaim/cli.py``), run in-process in temporary directories."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import stat
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from essaim import __version__
from essaim.cli import main
from essaim.settings import load_settings
from node.auth import AuthError, authenticate, check_token
from node.db import Database
from node.geo.model import DEFAULT_DIR, DEFAULT_NAME
from tests.node_support import GOOD_ROWS, REPO, simple_csv


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    """No ESSAIM_* variable of the developer's shell leaks in; relative paths land in tmp_path.

    The gazetteer is found from the working directory by default: point at the checkout's.
    """
    gazetteer = Path(os.environ.get("ESSAIM_GAZETTEER") or REPO / DEFAULT_DIR / DEFAULT_NAME).resolve()
    for name in list(os.environ):
        if name.startswith("ESSAIM_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ESSAIM_GAZETTEER", str(gazetteer))
    monkeypatch.chdir(tmp_path)


def run(capsys, *argv: str, stdin: str | None = None, monkeypatch=None) -> tuple[int, str, str]:
    if stdin is not None:
        assert monkeypatch is not None
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def with_db(data_dir: Path, work: Callable[[Database], Awaitable[Any]]) -> Any:
    settings = load_settings(environ={"ESSAIM_DATA_DIR": str(data_dir)})

    async def go() -> Any:
        db = Database(settings.effective_database_url)
        await db.open()
        try:
            return await work(db)
        finally:
            await db.close()

    return asyncio.run(go())


@pytest.fixture
def node(capsys, tmp_path) -> Path:
    data = tmp_path / "noeud"
    code, _, err = run(capsys, "node", "init", "--data-dir", str(data), "--name", "Réseau Test")
    assert code == 0, err
    return data


def test_version(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.strip() == f"essaim {__version__}"


def test_node_init_writes_settings_keys_and_database(capsys, tmp_path):
    data = tmp_path / "noeud"
    code, out, err = run(
        capsys,
        "node",
        "init",
        "--data-dir",
        str(data),
        "--name",
        'Le "Réseau" des tiers-lieux',
        "--base-url",
        "https://noeud.example.org/",
        "--port",
        "9001",
    )
    assert code == 0, err
    assert f"wrote {data / 'essaim.toml'}" in out
    assert "database ready: sqlite:///" in out
    settings = load_settings(environ={"ESSAIM_DATA_DIR": str(data)})
    assert settings.config_file == str(data / "essaim.toml")
    assert settings.partner.name == 'Le "Réseau" des tiers-lieux'
    assert (settings.base_url, settings.port) == ("https://noeud.example.org", 9001)
    for private in ("secrets/session.key", "secrets/oai-token.key", "keys/actor.pem"):
        assert stat.S_IMODE((data / private).stat().st_mode) == 0o600, private
    assert (data / "keys" / "actor.pub.pem").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    public = (data / "keys" / "actor.pub.pem").read_bytes()
    tables = with_db(data, lambda db: db.fetch("SELECT name FROM sqlite_master WHERE type = 'table'"))
    assert {"sheet", "api_token", "admin_user", "import_run"} <= {t["name"] for t in tables}

    # Again: the settings and keys stay, the database is only upgraded.
    key = (data / "keys" / "actor.pem").read_bytes()
    secret = (data / "secrets" / "session.key").read_bytes()
    code, out, _ = run(capsys, "node", "init", "--data-dir", str(data), "--name", "Autre")
    assert code == 0
    assert "exists already" in out
    assert load_settings(environ={"ESSAIM_DATA_DIR": str(data)}).partner.name == 'Le "Réseau" des tiers-lieux'
    assert (data / "keys" / "actor.pem").read_bytes() == key
    assert (data / "secrets" / "session.key").read_bytes() == secret
    (data / "keys" / "actor.pub.pem").unlink()  # a lost public key is derived again from the private one
    code, _, _ = run(capsys, "node", "init", "--data-dir", str(data), "--name", "Autre", "--force")
    assert code == 0
    assert (data / "keys" / "actor.pub.pem").read_bytes() == public
    assert load_settings(environ={"ESSAIM_DATA_DIR": str(data)}).partner.name == "Autre"
    assert (data / "keys" / "actor.pem").read_bytes() == key


def test_node_init_with_an_unreachable_database_fails_clearly(capsys, tmp_path):
    code, _, err = run(
        capsys, "node", "init", "--data-dir", str(tmp_path / "n"), "--database-url", "postgres://essaim@127.0.0.1:1/x"
    )
    assert code == 1
    assert err.startswith("essaim: ")
    assert "Traceback" not in err
    assert 'database_url = "postgres://essaim@127.0.0.1:1/x"' in (tmp_path / "n" / "essaim.toml").read_text()


def test_tokens(capsys, node):
    code, out, err = run(capsys, "token", "create", "site-web", "--data-dir", str(node))
    assert code == 0
    token = out.strip()
    assert token.startswith("essaim_")
    assert "shown only once" in err
    assert with_db(node, lambda db: check_token(db, token)) == "site-web"

    assert run(capsys, "token", "create", "import-nuit", "--data-dir", str(node))[0] == 0
    code, out, _ = run(capsys, "token", "list", "--data-dir", str(node))
    assert out.splitlines() == ["import-nuit\tactive", "site-web\tactive"]
    assert token not in out

    code, out, err = run(capsys, "token", "create", "site-web", "--data-dir", str(node))
    assert code == 1
    assert "a token named 'site-web' already exists" in err

    code, out, _ = run(capsys, "token", "revoke", "site-web", "--data-dir", str(node))
    assert (code, out.strip()) == (0, "revoked site-web")
    assert run(capsys, "token", "list", "--data-dir", str(node))[1].splitlines() == [
        "import-nuit\tactive",
        "site-web\trevoked",
    ]
    with pytest.raises(AuthError):
        with_db(node, lambda db: check_token(db, token))

    code, _, err = run(capsys, "token", "revoke", "personne", "--data-dir", str(node))
    assert code == 1
    assert err.strip() == "essaim: no token named 'personne'"
    code, _, err = run(capsys, "token", "create", " ", "--data-dir", str(node))
    assert (code, err.strip()) == (1, "essaim: a token needs a name")


def test_admin_create_user(capsys, monkeypatch, node):
    code, out, err = run(
        capsys,
        "admin",
        "create-user",
        "Camille@Reseau.test",
        "--password-stdin",
        "--data-dir",
        str(node),
        stdin="un mot de passe solide\n",
        monkeypatch=monkeypatch,
    )
    assert code == 0, err
    assert "admin user Camille@Reseau.test ready" in out
    user = with_db(node, lambda db: authenticate(db, "camille@reseau.test", "un mot de passe solide"))
    stored = with_db(node, lambda db: db.fetchone("SELECT password_hash FROM admin_user WHERE id = ?", [user]))
    assert stored["password_hash"].startswith("scrypt$")

    code, _, err = run(
        capsys,
        "admin",
        "create-user",
        "camille@reseau.test",
        "--password-stdin",
        "--data-dir",
        str(node),
        stdin="court\n",
        monkeypatch=monkeypatch,
    )
    assert (code, err.strip()) == (1, "essaim: the password must have at least 10 characters")
    code, _, err = run(
        capsys,
        "admin",
        "create-user",
        "pas-une-adresse",
        "--password-stdin",
        "--data-dir",
        str(node),
        stdin="un mot de passe solide\n",
        monkeypatch=monkeypatch,
    )
    assert code == 1 and "is not an e-mail address" in err


@pytest.fixture
def csv_file(tmp_path) -> Path:
    path = tmp_path / "projets.csv"
    path.write_bytes(simple_csv(*GOOD_ROWS))
    return path


def test_node_import_dry_run_then_real_then_again(capsys, node, csv_file):
    base = ["node", "import", str(csv_file), "--mapping", "simple", "--data-dir", str(node), "--no-progress"]
    code, out, err = run(capsys, *base, "--dry-run")
    assert code == 0, err
    assert "2 rows, 2 sheets: 2 would be created, 0 updated, 0 unchanged" in out
    assert "places: commune 2" in out
    count = "SELECT COUNT(*) AS n FROM sheet"
    assert with_db(node, lambda db: db.fetchone(count))["n"] == 0

    code, out, _ = run(capsys, *base)
    assert code == 0
    assert "2 were created" in out
    assert with_db(node, lambda db: db.fetchone(count))["n"] == 2

    code, out, _ = run(capsys, *base, "--json")
    report = json.loads(out)
    assert (report["ok"], report["created"], report["unchanged"]) == (True, 0, 2)


def test_node_import_refuses_a_broken_file(capsys, node, tmp_path):
    broken = tmp_path / "casse.csv"
    broken.write_bytes(simple_csv(GOOD_ROWS[0], {"identifiant": "x", "titre": "SIRET", "porteur": "A", "siret": "4"}))
    code, _, err = run(capsys, "node", "import", str(broken), "--mapping", "simple", "--data-dir", str(node))
    assert code == 2
    assert "import refused, nothing was written: 1 error(s)" in err
    assert "line 3: holder.siret (column 'siret'): must be 14 digits" in err
    assert with_db(node, lambda db: db.fetchone("SELECT COUNT(*) AS n FROM sheet"))["n"] == 0

    code, _, err = run(capsys, "node", "import", "absent.csv", "--mapping", "simple", "--data-dir", str(node))
    assert (code, err.strip()) == (1, "essaim: absent.csv: no such file")
    code, _, err = run(capsys, "node", "import", str(broken), "--mapping", "inconnu", "--data-dir", str(node))
    assert code == 1 and "no mapping 'inconnu'" in err


def test_node_export(capsys, node, csv_file, tmp_path):
    run(capsys, "node", "import", str(csv_file), "--mapping", "simple", "--data-dir", str(node), "--no-progress")
    target = tmp_path / "export.csv"
    code, out, _ = run(capsys, "node", "export", "--format", "csv", "-o", str(target), "--data-dir", str(node))
    assert code == 0 and out == ""
    rows = list(csv.DictReader(io.StringIO(target.read_text(encoding="utf-8"))))
    assert sorted(r["local_id"] for r in rows) == ["jardin-1", "repair-2"]
    assert {r["insee"] for r in rows} == {"35238", "29019"}

    code, out, _ = run(capsys, "node", "export", "--data-dir", str(node))  # JSON on standard output
    sheets = json.loads(out)
    assert sorted(s["local_id"] for s in sheets) == ["jardin-1", "repair-2"]
    assert all(s["id"].startswith("http://127.0.0.1:8080/sheets/") for s in sheets)

    code, out, _ = run(capsys, "node", "export", "--format", "geojson", "--data-dir", str(node))
    assert len(json.loads(out)["features"]) == 2


def test_doctor_prints_settings_and_sqlite_pragmas(capsys, node):
    code, out, err = run(capsys, "doctor", "--data-dir", str(node))
    assert code == 0, err
    report = json.loads(out)
    assert report["version"] == __version__
    assert report["settings"]["data_dir"] == str(node)
    assert report["settings"]["config_file"] == str(node / "essaim.toml")
    assert report["settings"]["partner"]["name"] == "Réseau Test"
    database = report["database"]
    assert database["dialect"] == "sqlite"
    assert database["pragmas"]["journal_mode"] == "wal"
    assert database["pragmas"]["synchronous"] == "FULL"
    assert database["pragmas"]["foreign_keys"] == "ON"
    assert report["sheets"] == {"live": 0, "deleted": 0}


def test_doctor_hides_passwords_and_fails_on_an_unusable_database(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ESSAIM_DATABASE_URL", "postgres://essaim:s3cr3t@127.0.0.1:1/essaim")
    code, out, _ = run(capsys, "doctor", "--data-dir", str(tmp_path / "n"))
    assert code == 1
    report = json.loads(out)
    assert "s3cr3t" not in out
    assert report["settings"]["database_url"] == "postgres://essaim:***@127.0.0.1:1/essaim"
    assert report["database"]["error"]

    monkeypatch.delenv("ESSAIM_DATABASE_URL")
    code, out, _ = run(capsys, "doctor", "--data-dir", str(tmp_path / "jamais-initialise"))
    assert code == 1
    assert "run essaim db upgrade" in json.loads(out)["database"]["error"]


def test_db_upgrade_is_idempotent(capsys, tmp_path):
    data = tmp_path / "n"
    code, out, _ = run(capsys, "db", "upgrade", "--data-dir", str(data))
    assert code == 0
    assert out.strip().startswith("applied: node.0001_initial")
    code, out, _ = run(capsys, "db", "upgrade", "--data-dir", str(data))
    assert (code, out.strip()) == (0, "applied: nothing, the schema is current")


def test_settings_errors_exit_1_with_the_file_and_key(capsys, tmp_path):
    data = tmp_path / "n"
    data.mkdir()
    (data / "essaim.toml").write_text("port = 'huit mille'\n", encoding="utf-8")
    code, out, err = run(capsys, "doctor", "--data-dir", str(data))
    assert code == 1 and out == ""
    assert err.strip() == f"essaim: {data / 'essaim.toml'}: port: expected a whole number, got 'huit mille'"
    code, _, err = run(capsys, "token", "list", "--config", str(tmp_path / "absent.toml"))
    assert (code, err.strip()) == (1, f"essaim: {tmp_path / 'absent.toml'}: settings file not found")


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["node", "import", "x.csv"])  # --mapping is required
    assert caught.value.code == 2
    assert "--mapping" in capsys.readouterr().err


def test_demo_prepares_a_browsable_node(capsys, tmp_path):
    from essaim.demo import DEMO_EMAIL, DEMO_PASSWORD

    data = tmp_path / "demo"
    code, out, err = run(capsys, "demo", "--no-serve", "--count", "5", "--port", "8123", "--data-dir", str(data))
    assert code == 0, err
    assert "node admin:       http://127.0.0.1:8124/admin" in out  # the hub on 8123, nodes on 8124-8126
    node = data / "node-1"
    assert with_db(node, lambda db: db.fetchone("SELECT COUNT(*) AS n FROM sheet"))["n"] >= 5
    assert with_db(node, lambda db: authenticate(db, DEMO_EMAIL, DEMO_PASSWORD)) > 0
    # Idempotent: a second run changes nothing.
    code, out, _ = run(capsys, "demo", "--no-serve", "--count", "5", "--port", "8123", "--data-dir", str(data))
    assert code == 0
    assert out.count(" 0 were created, 0 updated") == 3


def test_demo_data(capsys, tmp_path):
    target = tmp_path / "demo.jsonl"
    code, out, _ = run(capsys, "demo-data", str(target), "--count", "12")
    assert code == 0
    lines = target.read_text(encoding="utf-8").splitlines()
    assert out.strip() == f"wrote {len(lines)} sheets to {target}"
    assert len(lines) >= 12
    assert all(json.loads(line)["local_id"] for line in lines)

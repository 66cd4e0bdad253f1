"""Deploy-time settings (``essaim/settings.py``): defaults, the TOML file, ESSAIM_* variables,
errors that name the file and the key, and the secrets kept in the data directory."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from essaim.settings import Settings, SettingsError, load_settings, render_toml


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults(tmp_path):
    empty = tmp_path / "empty"
    settings = load_settings(environ={"ESSAIM_DATA_DIR": str(empty)})
    assert settings.role == "node"
    assert settings.data_dir == str(empty)
    assert settings.base_url == "http://127.0.0.1:8080"
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.partner.name == "Partenaire de démonstration"
    assert settings.oai.page_size == 100
    assert settings.oai.repository_name == settings.partner.name  # defaults to the partner's name
    assert settings.geo.online is False
    assert settings.outbound.allow == [] and settings.outbound.resolve == {}
    assert settings.admin.session_ttl == 8 * 3600
    assert settings.config_file == ""
    assert settings.effective_database_url == f"sqlite:///{empty / 'essaim.sqlite3'}"
    assert Settings().data_dir == "var/node"
    assert settings.as_dict()["partner"]["username"] == "partenaire"


def test_the_data_directory_settings_file_is_read(tmp_path):
    path = write(
        tmp_path / "essaim.toml",
        f"""
data_dir = "{tmp_path}"
base_url = "https://noeud.example.org/"
port = 9000
trusted_proxies = ["10.0.0.1", "10.0.0.2"]
database_url = "postgres://essaim@db:5432/essaim"

[partner]
name = "Réseau Breizh"

[oai]
page_size = 25
repository_name = "Banque Breizh"

[outbound]
resolve = {{ "hub.test" = "127.0.0.1" }}
connect_timeout = 2

[geo]
online = true
""",
    )
    settings = load_settings(environ={"ESSAIM_DATA_DIR": str(tmp_path)})
    assert settings.config_file == str(path)
    assert settings.base_url == "https://noeud.example.org"  # trailing slash dropped
    assert settings.port == 9000
    assert settings.trusted_proxies == ["10.0.0.1", "10.0.0.2"]
    assert settings.effective_database_url == "postgres://essaim@db:5432/essaim"
    assert settings.partner.name == "Réseau Breizh"
    assert settings.partner.username == "partenaire"  # untouched keys keep their default
    assert (settings.oai.page_size, settings.oai.repository_name) == (25, "Banque Breizh")
    assert settings.outbound.resolve == {"hub.test": "127.0.0.1"}
    assert settings.outbound.connect_timeout == 2.0 and isinstance(settings.outbound.connect_timeout, float)
    assert settings.geo.online is True


def test_explicit_file_and_essaim_config(tmp_path):
    one = write(tmp_path / "one.toml", 'base_url = "https://one.example"\n')
    two = write(tmp_path / "two.toml", 'base_url = "https://two.example"\n')
    assert load_settings(one, environ={}).base_url == "https://one.example"
    assert load_settings(environ={"ESSAIM_CONFIG": str(two)}).base_url == "https://two.example"
    assert load_settings(one, environ={"ESSAIM_CONFIG": str(two)}).base_url == "https://one.example"


def test_environment_overrides_the_file_and_flags_override_both(tmp_path):
    path = write(tmp_path / "essaim.toml", 'port = 9000\n[partner]\nname = "Fichier"\n[oai]\npage_size = 25\n')
    environ = {
        "ESSAIM_PORT": "9100",
        "ESSAIM_PARTNER_NAME": "Variable",
        "ESSAIM_OAI_PAGE_SIZE": "10",
        "ESSAIM_GEO_ONLINE": "yes",
        "ESSAIM_TRUSTED_PROXIES": "10.0.0.1, 10.0.0.2",
        "ESSAIM_OUTBOUND_RESOLVE": "a.test=127.0.0.1,b.test=127.0.0.2",
        "ESSAIM_OUTBOUND_TOTAL_TIMEOUT": "1.5",
        "ESSAIM_CONFIG_FILE": "ignored",
        "ESSAIM_UNRELATED": "ignored too",
    }
    settings = load_settings(path, environ=environ)
    assert settings.port == 9100
    assert settings.partner.name == "Variable"
    assert settings.oai.repository_name == "Variable"
    assert settings.oai.page_size == 10
    assert settings.geo.online is True
    assert settings.trusted_proxies == ["10.0.0.1", "10.0.0.2"]
    assert settings.outbound.resolve == {"a.test": "127.0.0.1", "b.test": "127.0.0.2"}
    assert settings.outbound.total_timeout == 1.5
    assert settings.config_file == str(path)

    flagged = load_settings(path, environ=environ, overrides={"port": 9200, "host": None})
    assert (flagged.port, flagged.host) == (9200, "127.0.0.1")  # None means "flag not given"


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("colour = 'blue'\n", "'colour'", "unknown setting"),
        ("[partner]\nnickname = 'x'\n", "'nickname'", "[partner]: unknown setting"),
        ("port = 'abc'\n", "port", "expected a whole number"),
        ("port = true\n", "port", "expected a whole number"),
        ("port = 80.5\n", "port", "expected a whole number"),
        ("base_url = true\n", "base_url", "expected text"),
        ("[geo]\nonline = 'maybe'\n", "online", "expected true or false"),
        ("[outbound]\nconnect_timeout = 'soon'\n", "connect_timeout", "expected a number"),
        ("[outbound]\nallow = 3\n", "allow", "expected a list"),
        ("partner = 'x'\n", "[partner]", "must be a table"),
        ("port =\n", "", "line 1"),
    ],
)
def test_bad_files_are_errors_naming_the_file_and_the_key(tmp_path, text, key, expected):
    path = write(tmp_path / "essaim.toml", text)
    with pytest.raises(SettingsError) as caught:
        load_settings(path, environ={})
    message = str(caught.value)
    assert message.startswith(str(path)), message
    assert key in message and expected in message, message


def test_unknown_key_lists_the_known_ones(tmp_path):
    path = write(tmp_path / "essaim.toml", "[oai]\npagesize = 3\n")
    with pytest.raises(SettingsError, match=r"known: page_size, read_ahead, repository_name, token_ttl"):
        load_settings(path, environ={})


@pytest.mark.parametrize(
    ("variable", "value"), [("ESSAIM_PORT", "eighty"), ("ESSAIM_GEO_ONLINE", "maybe"), ("ESSAIM_OAI_PAGE_SIZE", "")]
)
def test_bad_variables_are_errors_naming_the_variable(tmp_path, variable, value):
    with pytest.raises(SettingsError, match=f"^{variable}: "):
        load_settings(environ={"ESSAIM_DATA_DIR": str(tmp_path), variable: value})


def test_missing_file_and_bad_role(tmp_path):
    with pytest.raises(SettingsError, match="settings file not found"):
        load_settings(tmp_path / "nowhere.toml", environ={})
    with pytest.raises(SettingsError, match="role: must be 'node' or 'hub'"):
        load_settings(environ={"ESSAIM_DATA_DIR": str(tmp_path), "ESSAIM_ROLE": "relay"})


def test_secret_is_created_once_private_and_stable(tmp_path):
    settings = Settings(data_dir=str(tmp_path))
    first = settings.secret("session")
    assert len(first) == 64 and int(first, 16) >= 0
    assert settings.secret("session") == first
    assert Settings(data_dir=str(tmp_path)).secret("session") == first  # another process, same key
    assert settings.secret("oai-token") != first
    path = tmp_path / "secrets" / "session.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["oai-token.key", "session.key"]  # no leftovers


def test_an_empty_secret_file_is_an_error(tmp_path):
    write(tmp_path / "secrets" / "session.key", "")
    with pytest.raises(SettingsError, match=r"session\.key: the secret file is empty"):
        Settings(data_dir=str(tmp_path)).secret("session")


def test_rendered_file_reads_back_the_same_settings(tmp_path):
    settings = Settings(data_dir=str(tmp_path / 'dossier "spécial" \\ ici'), base_url="https://n.example")
    settings.partner.name = 'Le "Réseau" \\ des tiers-lieux'
    settings.partner.description = "Sur deux\nlignes"
    settings.database_url = "postgres://essaim@db/essaim"
    path = write(tmp_path / "essaim.toml", render_toml(settings))
    again = load_settings(path, environ={})
    assert again.partner.name == settings.partner.name
    assert again.partner.description == settings.partner.description
    assert again.data_dir == settings.data_dir
    assert again.database_url == settings.database_url
    assert again.base_url == "https://n.example"
    without_database = load_settings(write(tmp_path / "b.toml", render_toml(Settings())), environ={})
    assert without_database.database_url == ""
    assert os.linesep not in render_toml(Settings()).replace("\n", "")


def test_search_section_from_file_and_environment(tmp_path):
    from essaim.hub import search_config

    data = tmp_path / "hub"
    write(
        data / "essaim.toml",
        'role = "hub"\n[search]\nurls = ["http://10.0.0.1:8108", "http://10.0.0.2:8108/"]\n'
        'api_key = "k"\nbatch_size = 200\npoll = 0.25\n',
    )
    env = {"ESSAIM_DATA_DIR": str(data), "ESSAIM_SEARCH_WIDE_ZOOM": "6", "ESSAIM_SEARCH_INDEXER": "false"}
    settings = load_settings(environ=env)
    assert settings.search.urls == ["http://10.0.0.1:8108", "http://10.0.0.2:8108/"]
    assert (settings.search.batch_size, settings.search.poll, settings.search.wide_zoom) == (200, 0.25, 6)
    conf = search_config(settings)
    assert conf.urls == ("http://10.0.0.1:8108", "http://10.0.0.2:8108") and conf.api_key == "k"
    assert conf.indexer is False and conf.indexer_config.batch_size == 200
    # Embedded by default, its data under the hub's data directory.
    default = search_config(load_settings(environ={"ESSAIM_DATA_DIR": str(tmp_path / "d")}))
    assert default.urls == () and default.data_dir == str(tmp_path / "d" / "typesense")
    with pytest.raises(SettingsError, match="api_key"):
        search_config(load_settings(environ={**env, "ESSAIM_SEARCH_API_KEY": ""}))
    with pytest.raises(SettingsError, match="embedded = false needs urls"):
        search_config(load_settings(environ={"ESSAIM_DATA_DIR": str(tmp_path / "e"), "ESSAIM_SEARCH_EMBEDDED": "0"}))
    with pytest.raises(SettingsError, match="ESSAIM_SEARCH_BATCH_SIZE"):
        load_settings(environ={**env, "ESSAIM_SEARCH_BATCH_SIZE": "many"})


@pytest.mark.parametrize(("cores", "workers"), [(1, 0), (2, 2), (3, 3), (8, 4)])
def test_import_workers_default_to_the_cores_up_to_four(
    monkeypatch: pytest.MonkeyPatch, cores: int, workers: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cores)), raising=False)
    assert load_settings(environ={}).node.write_workers == workers
    assert load_settings(environ={"ESSAIM_NODE_WRITE_WORKERS": "0"}).node.write_workers == 0

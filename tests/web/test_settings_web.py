"""The ``[web]`` settings load from the TOML file and from ``ESSAIM_WEB_*`` variables, bad values named."""

from __future__ import annotations

import pytest

from essaim.settings import SettingsError, load_settings


def test_web_section_from_file_and_environment(tmp_path) -> None:
    config = tmp_path / "essaim.toml"
    config.write_text('[web]\ntile_url = "https://tiles.example/{z}/{x}/{y}.png"\ncache_ttl = 2.5\n', encoding="utf-8")
    settings = load_settings(config, environ={"ESSAIM_WEB_PER_PAGE": "30", "ESSAIM_WEB_SITE_NAME": "Hub"})
    assert settings.web.tile_url == "https://tiles.example/{z}/{x}/{y}.png"
    assert settings.web.cache_ttl == 2.5 and settings.web.per_page == 30 and settings.web.site_name == "Hub"
    with pytest.raises(SettingsError, match="ESSAIM_WEB_PER_PAGE"):
        load_settings(config, environ={"ESSAIM_WEB_PER_PAGE": "many"})


def test_bad_web_settings_stop_the_hub(tmp_path) -> None:
    from essaim.app import build_app

    for key, value, message in (("per_page", 500, "web.per_page"), ("tile_url", "http://t/{z}", "web.tile_url")):
        settings = load_settings(environ={}, overrides={"role": "hub", "data_dir": str(tmp_path)})
        setattr(settings.web, key, value)
        with pytest.raises(SettingsError, match=message):
            build_app(settings)

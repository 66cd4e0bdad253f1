"""Essaim: the app shell (settings, app assembly, CLI) around the top-level packages."""

__version__ = "0.1.0"

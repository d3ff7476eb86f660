"""The ``pytest11`` entry point ``recipes``: pytest loads it in every project that installs
this package, before it parses the command line.

It registers :mod:`recipes.plugin` under that module's own name, so that

- ``--db-url`` and the ini keys exist wherever the conftest that names the plugin lives (a
  conftest in ``app/`` found through ``testpaths`` is read after pytest's first look at the
  command line, which would otherwise take ``--db-url URL`` for a path);
- a ``pytest_plugins = ["recipes.plugin"]`` line finds it registered, and it is loaded once;
- ``-p no:recipes`` turns the automatic loading off (a conftest that names the plugin still
  loads it: that is asking for it).

The plugin is inert until it is used: no database is touched before a test asks for a
database fixture, and the report header names a database only when the configuration does.
"""

from __future__ import annotations

import pytest


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    # Called as soon as this module is registered: the earliest point to register the plugin.
    pluginmanager.import_plugin("recipes.plugin")

"""The project's own suite: the recipes plugin, on every configured database."""

pytest_plugins = ["recipes.plugin", "pytester"]

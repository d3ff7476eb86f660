"""README.md as a new user follows it: its configuration, pasted into a project, works."""

from __future__ import annotations

import re

from recipes.runner import PROJECT_ROOT

README = (PROJECT_ROOT / "README.md").read_text()


def _block(language: str, after: str) -> str:
    """The first ```language block after the heading ``after``."""
    section = README[README.index(after):]
    return re.search(rf"```{language}\n(.*?)```", section, re.S).group(1)


def test_the_readme_configuration_runs_without_a_warning(pytester, monkeypatch):
    monkeypatch.delenv("RECIPES_DB_URL", raising=False)
    ini = _block("toml", "## Use the plugin in your project")
    pytester.makefile(".toml", pyproject=ini.replace("myapp.models:Base", "recipes.demo.models:Base"))
    pytester.makeconftest(_block("python", "## Use the plugin in your project"))
    pytester.makepyfile(
        """
        import pytest
        from recipes.demo.service import count_users, register_user

        @pytest.mark.asyncio
        async def test_signup(db_session):
            await register_user(db_session, "ada@example.com")
            assert await count_users(db_session) == 1
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-W", "error::DeprecationWarning")

    result.assert_outcomes(passed=1)
    output = result.stdout.str()
    assert "warnings summary" not in output and "DeprecationWarning" not in output, output


def test_the_readme_says_how_to_install_before_the_package_is_published():
    install = _block("bash", "## Use the plugin in your project")
    assert "@ git+https://github.com/" in install
    assert "pip install -e" in install

"""Schema migrations of the document store, run with alembic configured in code (no
alembic.ini): ``Store`` migrates at start-up (``store.migrate_on_start``) and ``dss migrate``
on demand; see ``search.store.prepare_schema``.

A schema change is a new revision in ``versions/``: change the tables in search/store.py,
then let alembic draft the revision against a store at the current head, and edit it::

    python3 -c "from search.migrations import revision; revision('sqlite:////tmp/head.sqlite', 'what changed')"

A revision must work on SQLite and PostgreSQL (on SQLite, alter tables with
``op.batch_alter_table``) and keep tests/test_migrations.py's drift check passing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.script import ScriptDirectory

HERE = Path(__file__).resolve().parent
# The revision of a store created by deepseek-search before it used alembic: such a store
# (its tables and a ``meta.schema_version`` row of 1, no ``dss_alembic_version`` table) is
# stamped with it and then upgraded like any other.
BASELINE = "0001"
# Where alembic keeps the store's revision: a name of our own, so that a database shared with
# another alembic-managed application does not read that application's revision as ours.
VERSION_TABLE = "dss_alembic_version"
# Where revisions are found; tests add a folder of their own to simulate a newer release.
version_locations: list[Path] = [HERE / "versions"]


def alembic_config(connection: Any = None, url: str | None = None) -> Config:
    """An alembic ``Config`` for the packaged scripts. ``env.py`` runs the migrations on
    ``connection`` (inside the caller's transaction) or else on a new engine for ``url``."""
    config = Config()
    config.set_main_option("script_location", str(HERE).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", os.pathsep.join(str(p).replace("%", "%%") for p in version_locations))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    """The newest revision this code knows."""
    found = script_directory().get_current_head()
    assert found is not None, "no migration scripts found"
    return found


def revision(url: str, message: str, autogenerate: bool = True) -> None:
    """Draft the next revision (developers), numbered after the head (0002 after 0001): with
    ``autogenerate``, what differs between the store at ``url`` (at the current head) and the
    tables declared in search/store.py."""
    from alembic import command

    current = head()
    command.revision(
        alembic_config(url=url),
        message=message,
        autogenerate=autogenerate,
        version_path=str(HERE / "versions"),
        rev_id=f"{int(current) + 1:04d}" if current.isdigit() else None,
    )

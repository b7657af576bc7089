"""Fresh, migrated databases for tests, cloned from a template migrated once.

Running the migrations takes about a second a database (more on a loaded machine);
``CREATE DATABASE ... TEMPLATE`` copies a migrated one in a fraction of that.  Each
test process (each xdist worker) migrates one template on the session's server the
first time it needs a database there, and drops it at the end (the ``pg_server``
fixture calls ``templates_on`` and ``drop_templates``).  Other servers (a fault
test's private one, gone before the session ends) get freshly migrated databases.
The template is named like any scratch database (``tasklane_test_<created>_<random>``),
so one left by a killed run is dropped as stale by a later one.

A copy is exactly the migrated schema: ``migrate()`` on it applies nothing, so a
stack started on one (``tests.stack.start_stack``) finds it up to date.
"""

from __future__ import annotations

import threading

from chalicelib.adapters.postgres.migrate import migrate
from tools.devstack import services as devservices

_lock = threading.Lock()
_session_servers: set[str] = set()  # servers that outlive every database made on them
_templates: dict[str, str] = {}  # server URL -> this process's migrated template


def templates_on(server_url: str) -> None:
    """Copy databases on ``server_url`` from a template from now on (a server that
    runs until ``drop_templates``)."""
    with _lock:
        _session_servers.add(server_url)


def _template(server_url: str) -> str:
    with _lock:
        name = _templates.get(server_url)
        if name is None:
            name = devservices.test_database_name("test")
            url = devservices.ensure_database(server_url, name)
            try:
                migrate(url)
            except BaseException:
                devservices.drop_database(server_url, name)
                raise
            _templates[server_url] = name
        return name


def migrated_database(server_url: str, name: str) -> str:
    """The URL of database ``name`` on ``server_url``, migrated: a copy of the template
    when it does not exist yet, else the database as it is (a stack restarted on it)."""
    if server_url not in _session_servers:
        url = devservices.ensure_database(server_url, name)
        migrate(url)
        return url
    return devservices.ensure_database(server_url, name, template=_template(server_url))


def drop_templates() -> None:
    """Drop the templates this process made (end of the test session)."""
    with _lock:
        for server_url, name in _templates.items():
            devservices.drop_database(server_url, name)
        _templates.clear()
        _session_servers.clear()

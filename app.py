"""Tasklane's Chalice app: wiring only.  Routes live in ``chalicelib.api``; the
scheduled functions call into ``chalicelib.functions``."""

from __future__ import annotations

from typing import Any, cast

from chalice.app import Chalice, CloudWatchEvent, Rate

from chalicelib import functions
from chalicelib.api import bp
from chalicelib.http import error_normalizer

app = Chalice(app_name="tasklane")
app.register_blueprint(bp)
app.register_middleware(error_normalizer(app.routes), "http")


@app.schedule(Rate(1, unit=Rate.MINUTES), name="drain")
def drain(event: CloudWatchEvent) -> dict[str, Any]:
    return functions.drain(cast(Any, event.context))


@app.schedule(Rate(1, unit=Rate.MINUTES), name="sweep")
def sweep(event: CloudWatchEvent) -> dict[str, Any]:
    return functions.sweep()

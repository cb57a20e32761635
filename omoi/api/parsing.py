"""The blueprint every API module declares its routes on: flask-smorest's, with webargs'
parser reading a JSON body from the request's own cache. ``guards.check_body`` has already
parsed (and checked) every JSON body before a view runs; webargs would parse the raw bytes a
second time, which for a 15 MiB body is most of a second."""

from __future__ import annotations

from typing import Any

import flask
import flask_smorest
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request


class CachedJsonParser(FlaskParser):
    def _raw_load_json(self, req: flask.Request) -> Any:
        if not is_json_request(req):
            return core.missing
        return req.get_json(silent=False)  # cached: parsed once, by the body guard


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = CachedJsonParser()

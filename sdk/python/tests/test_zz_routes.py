"""The route walk (runs last): every operation of docs/openapi.yaml has a
method on both clients, and the suite above really called every route
through them. docs/openapi.yaml is itself checked against the server's mux
by internal/api's TestOpenAPIMatchesRoutes, so a route the server gains
without an SDK method fails here."""

from __future__ import annotations

import re

from conftest import HITS, openapi_operations
from stacyvm import AsyncClient, Client
from stacyvm._routes import NOT_WRAPPED, ROUTES


def test_every_operation_has_a_method() -> None:
    ops = openapi_operations()
    assert len(ops) > 30
    missing = [op for _, _, op in ops if op not in ROUTES and op not in NOT_WRAPPED]
    assert not missing, f"operations without an SDK method: {missing}"
    stale = set(ROUTES) - {op for _, _, op in ops}
    assert not stale, f"ROUTES names operations the API no longer has: {stale}"
    for op, name in ROUTES.items():
        assert callable(getattr(Client, name, None)), f"Client lacks {name} ({op})"
        assert callable(getattr(AsyncClient, name, None)), f"AsyncClient lacks {name} ({op})"


def test_every_route_was_called() -> None:
    uncalled = []
    for method, path, op in openapi_operations():
        if op in NOT_WRAPPED:
            continue
        pattern = re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$")
        if not any(m == method and pattern.match(p) for m, p in HITS):
            uncalled.append(f"{method} {path} ({op})")
    assert not uncalled, f"routes no test called through the SDK: {uncalled}"

"""Fixtures for unit tests: a real private PostgreSQL (see tests/pg_fixture.py)."""

from tests.pg_fixture import pg_cluster, pg_db, pg_dsn  # noqa: F401

"""Session-scoped private PostgreSQL for tests (a real server, no mocks).

Kept synchronous on purpose: PgCluster is subprocess code, and a sync session fixture avoids
pytest-asyncio loop-scope coupling.  Each test that writes gets its own fresh database (``pg_db``),
which is cheaper than truncating and keeps tests independent.

Expose in a conftest with ``from tests.pg_fixture import pg_cluster, pg_db, pg_dsn  # noqa: F401``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from ops.postgres import PgCluster, free_port


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A started PgCluster in a temp folder on a free port; stopped and deleted at session end."""
    # Not tmp_path_factory: its folders are 0700 root-owned, and as root the server runs as
    # `postgres`, which must be able to traverse the parent folder.
    base = Path(tempfile.mkdtemp(prefix="ccpbx-pg-"))
    os.chmod(base, 0o755)
    cluster = PgCluster(base / "data", free_port(), password=secrets.token_urlsafe(16))
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_dsn(pg_cluster: PgCluster) -> str:
    """DSN of the application role on the cluster's main database."""
    return pg_cluster.dsn


@pytest_asyncio.fixture
async def pg_db(pg_cluster: PgCluster) -> AsyncIterator[str]:
    """DSN of a brand-new empty database owned by the app role; dropped after the test.

    If the test stopped the server (outage tests), it is started again first.
    """
    name = f"t_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(pg_cluster.superuser_dsn)
    try:
        await admin.execute(f"CREATE DATABASE {name} OWNER {pg_cluster.user}")
    finally:
        await admin.close()
    try:
        yield pg_cluster.dsn_for(name)
    finally:
        pg_cluster.start()
        admin = await asyncpg.connect(pg_cluster.superuser_dsn)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await admin.close()

"""The Asterisk of the root filesystem is patched against the CVEs of tests/asterisk_cves.py (docs/security.md).

Needs the root filesystem the test command builds before pytest runs (scripts/setup.sh → ccpbx-ctl setup →
ops/rootfs.py ensure_rootfs), but no running PBX: it runs `asterisk -V` inside the chroot with the same function
that logs "root filesystem ready: Asterisk 22.10.1+dfsg..." at build time (ops/rootfs.py asterisk_version).

CVE-2026-57191: no record of it could be found (not in CVEProject/cvelistV5, nor in the searched issue,
documentation and web corpora), so it is checked against the latest 22.x fix that can be cited instead:
CVE-2026-23738, fixed in 22.8.2. The floors of CVE-2024-42365 and CVE-2023-49294 on 22.x are 22.0.0 (the 22
branch was created after both fixes and is not listed as affected).
Debian may backport a fix without changing the upstream version: comparing upstream versions is conservative
(it may call a patched package unpatched, never the reverse).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ops import rootfs
from ops.generate import default_rootfs
from tests.asterisk_cves import parse_version, unpatched

pytestmark = pytest.mark.live


def test_rootfs_asterisk_is_patched_against_the_cve_table() -> None:
    root = Path(default_rootfs())
    # Not skipped when missing: a live test that does not run is a check not made (the test command sets both up).
    assert rootfs.is_ready(root), f"no Asterisk root filesystem at {root}: run scripts/setup.sh first"
    assert os.geteuid() == 0, "reading the version runs Asterisk in its chroot, which needs root"
    banner = rootfs.asterisk_version(root)
    version = parse_version(banner)
    assert version[0] == 22, f"{banner}: the CVE floors are for the 22.x branch"
    missing = unpatched(version)
    assert not missing, f"{banner} is older than the fix of " + ", ".join(
        f"{c.cve} ({'.'.join(map(str, c.fixed_22))})" for c in missing)
    # The marker written when the root filesystem was built names the same version (nothing swapped since).
    assert (root / rootfs.MARKER).read_text().strip() == banner

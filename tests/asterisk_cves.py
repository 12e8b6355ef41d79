"""Asterisk CVEs the root filesystem must be patched against, with the first fixed version on the 22.x branch.

Sources (docs/security.md has the table with links):
* CVE-2024-42365 (GHSA-c4cg-9275-6w44, AMI `write=originate` enough to run code / change /etc/asterisk): the CVE
  record lists as affected < 18.24.2, 19.0.0–20.9.1, 21.0.0–21.4.1 (and certified < 18.9-cert11, < 20.7-cert2);
  it was published 2024-08-08, before the 22 branch existed (22.0.0 was released 2024-10-17), and the 22.x
  branch is not listed as affected: every 22.x release carries the fix, so the floor is 22.0.0.
* CVE-2023-49294 (GHSA-8857-hfmw-vg8f, AMI `GetConfig` path traversal: read any file): affected < 18.20.1,
  19.0.0–20.5.0, 21.0.0 (certified < 18.9-cert6); fixed in 18.20.1, 20.5.1, 21.0.1; 22.x was never affected, so the
  floor is 22.0.0.
* CVE-2026-57191: no record of this CVE could be found (not in the CVE list repository CVEProject/cvelistV5,
  nor in the issue, documentation and web-page corpora searched). It is NOT invented here: instead the check
  uses the latest Asterisk fix on the 22.x branch that can be cited, CVE-2026-23738 (GHSA-v6hp-wh3r-cwxh,
  /httpstatus echoes cookies and query values unescaped), fixed in 22.8.2.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

Version = tuple[int, int, int]


@dataclass(frozen=True)
class Cve:
    cve: str
    fixed_22: Version  # the first 22.x release that is not affected
    source: str
    found: bool = True  # False: no record found; `checked_as` names what is checked instead
    checked_as: str = ""


CVES: tuple[Cve, ...] = (
    Cve("CVE-2024-42365", (22, 0, 0), "https://github.com/asterisk/asterisk/security/advisories/GHSA-c4cg-9275-6w44"),
    Cve("CVE-2023-49294", (22, 0, 0), "https://github.com/asterisk/asterisk/security/advisories/GHSA-8857-hfmw-vg8f"),
    Cve("CVE-2026-57191", (22, 8, 2), "https://github.com/asterisk/asterisk/security/advisories/GHSA-v6hp-wh3r-cwxh",
        found=False, checked_as="CVE-2026-23738"),
)

_VERSION_RE = re.compile(r"^Asterisk (\d+)\.(\d+)\.(\d+)(?:[+~-][^\s]*)?$")


def parse_version(banner: str) -> Version:
    """`Asterisk 22.10.1+dfsg+~cs6.17.60671434-1` (asterisk -V, Debian's package version) → (22, 10, 1)."""
    m = _VERSION_RE.match(banner.strip())
    if not m:
        raise ValueError(f"not an Asterisk release version: {banner!r}")
    major, minor, patch = (int(g) for g in m.groups())
    return major, minor, patch


def unpatched(version: Version) -> list[Cve]:
    """The CVEs of the table this 22.x version is not patched against (an other major version: all of them)."""
    if version[0] != 22:
        return list(CVES)
    return [c for c in CVES if version < c.fixed_22]

-- 0017: SIP sources blocked for password guessing (acd/sip_guard.py, docs/security-sip.md). One row per ban:
-- the address, how many failed authentications within the window caused it and which accounts were tried, until
-- when it lasts, whether the firewall really enforced it, and who lifted it early (DELETE /api/v1/security/bans/…).
-- A ban is active while expires_at is in the future and lifted_at is null; the firewall's own per-address timeout
-- ends it at expires_at even when the service is not running.
CREATE TABLE IF NOT EXISTS sip_bans (
    id          bigserial PRIMARY KEY,
    node        text NOT NULL,
    address     inet NOT NULL,
    banned_at   timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    failures    integer NOT NULL CHECK (failures > 0),
    reason      text NOT NULL,
    accounts    text[] NOT NULL DEFAULT '{}',
    enforced    boolean NOT NULL,
    lifted_at   timestamptz,
    lifted_by   text,
    CHECK (expires_at > banned_at)
);
CREATE INDEX IF NOT EXISTS sip_bans_active ON sip_bans (node, address, expires_at) WHERE lifted_at IS NULL;
CREATE INDEX IF NOT EXISTS sip_bans_banned_at ON sip_bans (node, banned_at);

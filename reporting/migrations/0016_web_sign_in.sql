-- 0016: sign-in for the web UI. A user may have a password (argon2id hash, web/passwords.py) besides the API
-- token; a signed-in browser holds a session cookie whose SHA-256 is stored here with its CSRF token, so sessions
-- survive a service restart and a sign-out (or a deleted user) ends them everywhere at once.
ALTER TABLE api_users ADD COLUMN IF NOT EXISTS password_hash text;
ALTER TABLE api_users ADD COLUMN IF NOT EXISTS password_set_at timestamptz;

CREATE TABLE IF NOT EXISTS web_sessions (
    id_sha256    text PRIMARY KEY,
    user_name    text NOT NULL REFERENCES api_users (name) ON DELETE CASCADE ON UPDATE CASCADE,
    csrf         text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen    timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    user_agent   text NOT NULL DEFAULT '',
    remote       text NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS web_sessions_user ON web_sessions (user_name);
CREATE INDEX IF NOT EXISTS web_sessions_expires ON web_sessions (expires_at);

-- Failed sign-ins per user name, so guessing is slowed down (and visible) without locking the real user out forever.
CREATE TABLE IF NOT EXISTS web_sign_in_failures (
    user_name  text NOT NULL,
    at         timestamptz NOT NULL DEFAULT now(),
    remote     text NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS web_sign_in_failures_user ON web_sign_in_failures (user_name, at);

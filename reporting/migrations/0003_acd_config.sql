-- Contact-center configuration, managed over the REST API. Names that may reach the dialplan are restricted
-- to ^[a-z0-9][a-z0-9_-]{0,63}$ by CHECK constraints too, so nothing unsafe can be stored even by hand.

CREATE TABLE IF NOT EXISTS teams (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS phones (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    password    text NOT NULL CHECK (length(password) >= 16 AND password ~ '^[A-Za-z0-9_-]+$'),
    kind        text NOT NULL DEFAULT 'agent' CHECK (kind IN ('agent', 'supervisor')),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS skills (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS agents (
    name         text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    display_name text NOT NULL DEFAULT '',
    phone        text UNIQUE REFERENCES phones (name) ON DELETE RESTRICT,
    team         text REFERENCES teams (name) ON DELETE RESTRICT,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS agent_skills (
    agent  text NOT NULL REFERENCES agents (name) ON DELETE CASCADE,
    skill  text NOT NULL REFERENCES skills (name) ON DELETE RESTRICT,
    level  integer NOT NULL CHECK (level BETWEEN 1 AND 5),
    PRIMARY KEY (agent, skill)
);

CREATE TABLE IF NOT EXISTS queues (
    name               text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    strategy           text NOT NULL DEFAULT 'rrmemory'
                       CHECK (strategy IN ('ringall', 'leastrecent', 'fewestcalls', 'random', 'rrmemory', 'linear', 'wrandom')),
    required_skill     text REFERENCES skills (name) ON DELETE RESTRICT,
    -- skills routing: [{"after_s": 0, "min_level": 5}, {"after_s": 20, "min_level": 1}]
    escalation         jsonb NOT NULL DEFAULT '[]'::jsonb,
    sl_threshold_s     integer NOT NULL DEFAULT 20 CHECK (sl_threshold_s BETWEEN 1 AND 3600),
    ring_timeout_s     integer NOT NULL DEFAULT 15 CHECK (ring_timeout_s BETWEEN 5 AND 120),
    max_wait_s         integer CHECK (max_wait_s BETWEEN 5 AND 86400),
    max_len            integer NOT NULL DEFAULT 0 CHECK (max_len BETWEEN 0 AND 10000),
    overflow_queue     text REFERENCES queues (name) ON DELETE RESTRICT,
    wrapup_s           integer NOT NULL DEFAULT 0 CHECK (wrapup_s BETWEEN 0 AND 3600),
    announce_position  boolean NOT NULL DEFAULT false,
    announce_holdtime  boolean NOT NULL DEFAULT false,
    created_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (overflow_queue IS NULL OR overflow_queue <> name)
);

CREATE TABLE IF NOT EXISTS inbound_routes (
    did         text PRIMARY KEY CHECK (did ~ '^[0-9]{1,20}$'),
    queue       text REFERENCES queues (name) ON DELETE RESTRICT,
    ivr_flow    text CHECK (ivr_flow ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((queue IS NULL) <> (ivr_flow IS NULL))
);

CREATE TABLE IF NOT EXISTS pause_reasons (
    code   text PRIMARY KEY CHECK (code ~ '^[a-z0-9][a-z0-9_-]{0,31}$'),
    label  text NOT NULL DEFAULT ''
);

CREATE TABLE IF NOT EXISTS dispositions (
    code   text PRIMARY KEY CHECK (code ~ '^[a-z0-9][a-z0-9_-]{0,31}$'),
    label  text NOT NULL DEFAULT ''
);

CREATE TABLE IF NOT EXISTS vip_callers (
    number    text PRIMARY KEY CHECK (number ~ '^\+?[0-9]{2,20}$'),
    priority  integer NOT NULL DEFAULT 10 CHECK (priority BETWEEN 1 AND 100)
);

-- API users: a bearer token per user (only its SHA-256 is stored), with a role.
CREATE TABLE IF NOT EXISTS api_users (
    name          text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
    role          text NOT NULL CHECK (role IN ('agent', 'supervisor', 'admin')),
    agent         text REFERENCES agents (name) ON DELETE CASCADE,
    team          text REFERENCES teams (name) ON DELETE RESTRICT,
    token_sha256  text NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (role <> 'agent' OR agent IS NOT NULL)
);

INSERT INTO pause_reasons (code, label) VALUES
    ('break', 'Break'), ('lunch', 'Lunch'), ('training', 'Training'), ('missed', 'Missed a call (automatic)')
ON CONFLICT DO NOTHING;
INSERT INTO dispositions (code, label) VALUES
    ('resolved', 'Resolved'), ('follow-up', 'Needs follow-up'), ('escalated', 'Escalated')
ON CONFLICT DO NOTHING;

-- 0004: agent states (acd/agent_state.py) and wrap-up codes.
--
-- agent_state_log is append-only: one row per state change with its exact instant (µs), so agent figures
-- (KPIS.md) can be cut at any interval boundary. (node, agent, at, to_state, cause) makes re-recording the
-- same transitions a no-op. agent_sessions is derived from the log (its latest row per agent) and is what
-- the service re-applies after a restart: who is logged in, who is paused with which reason, who is in ACW.

CREATE TABLE IF NOT EXISTS agent_state_log (
    id          bigserial   PRIMARY KEY,
    node        text        NOT NULL,
    agent       text        NOT NULL,
    from_state  text        NOT NULL CHECK (from_state IN
                    ('logged_out', 'available', 'ringing', 'on_call', 'on_hold', 'acw', 'paused')),
    to_state    text        NOT NULL CHECK (to_state IN
                    ('logged_out', 'available', 'ringing', 'on_call', 'on_hold', 'acw', 'paused')),
    at          timestamptz NOT NULL,
    reason      text,                      -- pause reason code when to_state = 'paused'
    cause       text        NOT NULL,      -- AgentConnect, cmd:pause, acw_timeout, force:<by>, ...
    linkedid    text,
    queue       text,
    uniqueid    text,                      -- the caller's channel
    CONSTRAINT agent_state_log_idem_key UNIQUE (node, agent, at, to_state, cause),
    CHECK ((to_state = 'paused') = (reason IS NOT NULL))
);

CREATE INDEX IF NOT EXISTS agent_state_log_agent_at_idx ON agent_state_log (agent, at);
CREATE INDEX IF NOT EXISTS agent_state_log_at_idx ON agent_state_log (at);

CREATE TABLE IF NOT EXISTS agent_sessions (
    node          text        NOT NULL,
    agent         text        NOT NULL,
    state         text        NOT NULL CHECK (state IN
                      ('logged_out', 'available', 'ringing', 'on_call', 'on_hold', 'acw', 'paused')),
    since         timestamptz NOT NULL,
    reason        text,
    linkedid      text,
    queue         text,
    uniqueid      text,
    logged_in_at  timestamptz,
    PRIMARY KEY (node, agent)
);

CREATE TABLE IF NOT EXISTS call_dispositions (
    node      text        NOT NULL,
    linkedid  text        NOT NULL,
    queue     text,
    agent     text        NOT NULL,
    code      text        NOT NULL REFERENCES dispositions (code) ON DELETE RESTRICT,
    at        timestamptz NOT NULL,
    PRIMARY KEY (node, linkedid, agent)
);

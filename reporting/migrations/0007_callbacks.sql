-- 0007: queue callback that keeps the caller's place.
--
-- A caller waiting in a queue with callback_enabled presses 1: app_queue takes them out of the queue into the
-- dialplan context [queue-callback] (queues.conf option `context`: a caller may press a single digit that exists
-- as an extension there), which reports the request (AMI UserEvent CallbackRequest) and hangs up. The service
-- stores the request below and originates a placeholder (a Local channel) that waits in the queue at the
-- caller's place; when an agent answers it, the other half of the Local channel calls the customer (agent
-- first, then the customer). See docs/acd.md, "Callback".

ALTER TABLE queues ADD COLUMN IF NOT EXISTS callback_enabled boolean NOT NULL DEFAULT false;

-- ---------------------------------------------------------------- app_queue: `context` for callback queues
-- Same as 0005 plus one column at the end (CREATE OR REPLACE VIEW may only add columns at the end). NULL (no
-- `context` option) unless callback_enabled. asterisk_queues_conf (0006) turns every non-NULL column into an
-- option; it reads this view as a whole row, so it is re-created below to pick the new column up.
CREATE OR REPLACE VIEW asterisk_queues AS
SELECT q.name                                                        AS name,
       q.strategy                                                    AS strategy,
       q.ring_timeout_s                                              AS timeout,
       1                                                             AS retry,
       0                                                             AS wrapuptime,
       q.max_len                                                     AS maxlen,
       q.sl_threshold_s                                              AS servicelevel,
       'no'::text                                                    AS ringinuse,
       'yes'::text                                                   AS joinempty,
       'no'::text                                                    AS leavewhenempty,
       'yes'::text                                                   AS setinterfacevar,
       'yes'::text                                                   AS setqueueentryvar,
       CASE WHEN q.announce_position THEN 'yes' ELSE 'no' END        AS announce_position,
       CASE WHEN q.announce_holdtime THEN 'yes' ELSE 'no' END        AS announce_holdtime,
       CASE WHEN q.announce_position OR q.announce_holdtime THEN 30 ELSE 0 END AS announce_frequency,
       0                                                             AS periodic_announce_frequency,
       'no'::text                                                    AS reportholdtime,
       'yes'::text                                                   AS autofill,
       CASE WHEN EXISTS (SELECT 1 FROM asterisk_queue_rules r WHERE r.rule_name = q.name)
            THEN q.name END                                          AS defaultrule,
       CASE WHEN q.callback_enabled THEN 'queue-callback' END        AS context
FROM queues q;

CREATE OR REPLACE VIEW asterisk_queues_conf AS
WITH general (var_metric, var_name, var_val) AS (
    VALUES (1, 'persistentmembers', 'no'),       -- members are dynamic; the service re-adds them (queue_members)
           (2, 'autofill', 'yes'),
           (3, 'monitor-type', 'MixMonitor'),
           (4, 'shared_lastcall', 'yes'),
           (5, 'log_membername_as_agent', 'yes'),
           (6, 'updatecdr', 'no')
), queue_options AS (
    SELECT q.name                                                   AS category,
           -(dense_rank() OVER (ORDER BY q.name))::int              AS cat_metric,
           (row_number() OVER (PARTITION BY q.name ORDER BY o.key))::int AS var_metric,
           replace(o.key, '_', '-')                                 AS var_name,
           o.value                                                  AS var_val
    FROM asterisk_queues q
    CROSS JOIN LATERAL jsonb_each_text(to_jsonb(q) - 'name') AS o(key, value)
    WHERE o.value IS NOT NULL AND o.value <> ''
), conf AS (
    SELECT 'general'::text AS category, 0 AS cat_metric, g.var_metric, g.var_name, g.var_val FROM general g
    UNION ALL
    SELECT category, cat_metric, var_metric, var_name, var_val FROM queue_options
)
SELECT (row_number() OVER (ORDER BY c.cat_metric DESC, c.var_metric))::int AS id,
       c.cat_metric,
       c.var_metric,
       0                    AS commented,
       'queues.conf'::text  AS filename,
       c.category,
       c.var_name,
       c.var_val
FROM conf c;

REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON asterisk_queues, asterisk_queues_conf FROM CURRENT_USER;

-- ---------------------------------------------------------------- callback requests
-- One row per request. Never twice: one row per caller channel (caller_uniqueid UNIQUE: a replayed event or a
-- second key press inserts nothing), at most one open callback per number and queue, and the placeholder is
-- originated only by the transition pending -> queued (an UPDATE ... WHERE status = 'pending'), never again.
--   pending         stored, placeholder not originated yet (PBX unavailable: originated after the reconnect)
--   queued          placeholder originated, waiting in the queue at the caller's place
--   agent_answered  an agent answered the placeholder
--   dialing         the customer's phone is being called (the agent is on the line)
--   completed       the customer answered
--   failed          see `detail` (customer did not answer, placeholder lost, originate outcome unknown, ...)
CREATE TABLE IF NOT EXISTS callbacks (
    id                    bigserial PRIMARY KEY,
    node                  text NOT NULL,
    queue                 text NOT NULL CHECK (queue ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    number                text NOT NULL CHECK (number ~ '^\+?[0-9]{2,20}$'),
    did                   text CHECK (did ~ '^[0-9]{1,20}$'),
    priority              integer NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 999),
    caller_uniqueid       text NOT NULL UNIQUE CHECK (length(caller_uniqueid) BETWEEN 1 AND 150),
    linkedid              text NOT NULL DEFAULT '' CHECK (length(linkedid) <= 150),
    position              integer CHECK (position >= 1),
    entered_at            timestamptz,            -- the caller's QueueCallerJoin (their place in the queue)
    requested_at          timestamptz NOT NULL,   -- the key press (the CallbackRequest event)
    status                text NOT NULL DEFAULT 'pending'
                          CHECK (status IN ('pending', 'queued', 'agent_answered', 'dialing', 'completed', 'failed')),
    placeholder_uniqueid  text UNIQUE,
    agent                 text,
    dial_status           text,
    detail                text NOT NULL DEFAULT '',
    updated_at            timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX IF NOT EXISTS callbacks_one_open_per_number ON callbacks (queue, number)
    WHERE status IN ('pending', 'queued', 'agent_answered', 'dialing');
CREATE INDEX IF NOT EXISTS callbacks_open_by_node ON callbacks (node, requested_at)
    WHERE status IN ('pending', 'queued', 'agent_answered', 'dialing');

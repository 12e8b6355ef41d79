-- 0006: what Asterisk keeps through a PostgreSQL outage.
--
-- 1. queues.conf and queuerules.conf rendered from the `queues` table, read by app_queue at (re)load time only
--    ("static realtime"), instead of the per-call realtime families `queues` and `queue_rules` (0005).
-- 2. Tombstones for removed phones, so that the memory cache res_pjsip now keeps behind the database
--    (sorcery.conf) cannot serve a deleted phone.
--
-- Why 1: with the realtime family `queues`, app_queue looked a queue up in PostgreSQL on every use and, when the
-- lookup failed because PostgreSQL was down, dropped the queue from memory together with its dynamic members.
-- Now extconfig.conf maps the whole files (`queues.conf => pgsql,<db>,asterisk_queues_conf`, same for
-- queuerules.conf): app_queue reads every queue at start-up and on AMI `QueueReload` (Parameters: yes, Rules:
-- yes), keeps them in memory in between, and a reload attempted while PostgreSQL is down fails as a whole and
-- changes nothing. The service sends `QueueReload` after start-up, after every AMI (re)connect and after each
-- change of a queue over the API. The views asterisk_queues and asterisk_queue_rules (0005) stay the one place
-- that maps our columns to app_queue options; the views below only reshape them.
--
-- Asterisk's static-realtime table format (res_config_pgsql): id, cat_metric, var_metric, commented, filename,
-- category, var_name, var_val; it runs
--     SELECT category, var_name, var_val, cat_metric FROM <view>
--     WHERE filename = '<file>' AND commented = 0
--     ORDER BY cat_metric DESC, var_metric ASC, category, var_name
-- and starts a new category whenever category OR cat_metric changes from one row to the next, so every category
-- has its own cat_metric ([general] 0, then -1, -2, ... by name). A mapped file is read from the database only,
-- never from disk, so [general] is here too.

-- ---------------------------------------------------------------- queues.conf
-- The options of a queue are exactly those of the view asterisk_queues (0005), one row per non-NULL column,
-- with `_` written `-` as app_queue did for realtime columns (announce_position -> announce-position).
CREATE VIEW asterisk_queues_conf AS
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

-- ---------------------------------------------------------------- queuerules.conf (penalty rules)
-- Static realtime as well, for the same reason: with the realtime family `queue_rules` (0005), a rules reload
-- while PostgreSQL was down emptied app_queue's rule list (measured: `QueueReload Rules: yes` answered
-- "success" and `queue show rules` was empty until the next reload), so skills escalation stopped for every
-- caller. A mapped file that cannot be read is not reloaded at all: the rules in memory stay.
-- One category per rule (view asterisk_queue_rules, 0005: one rule per queue, named like it), one
-- `penaltychange => <seconds>,<max penalty>,<min penalty>` per step; absolute values, as the realtime rows were.
CREATE VIEW asterisk_queuerules_conf AS
WITH conf AS (
    SELECT 'general'::text AS category, 0 AS cat_metric, 1 AS var_metric,
           'realtime_rules'::text AS var_name, 'no'::text AS var_val
    UNION ALL
    SELECT r.rule_name,
           -(dense_rank() OVER (ORDER BY r.rule_name))::int,
           (row_number() OVER (PARTITION BY r.rule_name ORDER BY r."time", r.max_penalty))::int,
           'penaltychange',
           format('%s,%s,%s', r."time", r.max_penalty, r.min_penalty)
    FROM asterisk_queue_rules r
)
SELECT (row_number() OVER (ORDER BY c.cat_metric DESC, c.var_metric))::int AS id,
       c.cat_metric,
       c.var_metric,
       0                        AS commented,
       'queuerules.conf'::text  AS filename,
       c.category,
       c.var_name,
       c.var_val
FROM conf c;

REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON asterisk_queues_conf, asterisk_queuerules_conf FROM CURRENT_USER;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'asterisk_ro') THEN
        GRANT SELECT ON asterisk_queues_conf, asterisk_queuerules_conf TO asterisk_ro;
    END IF;
END
$$;

-- ---------------------------------------------------------------- phones: removals Asterisk must see at once
-- res_pjsip keeps reading phones per request (realtime families ps_endpoints/ps_auths/ps_aors), but sorcery.conf
-- now keeps a last-known-good copy of each phone in a memory cache placed AFTER the database: it answers only
-- when the database returned nothing, so phones keep registering and ringing while PostgreSQL is down. The cache
-- cannot tell "database down" from "phone deleted" (Asterisk returns no row for both), so a deleted phone would
-- keep working from the cache until its copy expires (object_lifetime_maximum). To make a removal apply at once,
-- a removed phone stays visible to Asterisk for a while as a tombstone that cannot be used: an auth whose
-- password is random on every read (no digest can ever match) and an endpoint without AOR (nothing can ring it,
-- context `removed` does not exist). A successful read replaces the cached copy with the tombstone.
-- Tombstones are kept 7 days (longer than the cache lifetime in sorcery.conf); adding the name again ends it.
CREATE TABLE phones_removed (
    name        text PRIMARY KEY,
    removed_at  timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION phones_track_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        INSERT INTO phones_removed (name) VALUES (OLD.name)
        ON CONFLICT (name) DO UPDATE SET removed_at = now();
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        DELETE FROM phones_removed WHERE name = NEW.name;
    END IF;
    DELETE FROM phones_removed WHERE removed_at < now() - interval '7 days';
    RETURN NULL;
END
$$;

CREATE TRIGGER phones_track_removed AFTER INSERT OR DELETE OR UPDATE OF name ON phones
    FOR EACH ROW EXECUTE FUNCTION phones_track_removed();

-- What extconfig.conf maps the families ps_endpoints and ps_auths to: the 0005 views plus the tombstones.
-- Columns in the order of ps_endpoints (0005); NULL = option left at Asterisk's default (not sent).
CREATE VIEW asterisk_ps_endpoints AS
SELECT * FROM ps_endpoints
UNION ALL
SELECT r.name, 'transport-udp', NULL, r.name, 'removed', 'all', 'ulaw', 'no', 'yes', 'yes', 'yes', 'rfc4733', 'no',
       'no', 'no', NULL, NULL
FROM phones_removed r
WHERE NOT EXISTS (SELECT 1 FROM phones p WHERE p.name = r.name);

CREATE VIEW asterisk_ps_auths AS
SELECT * FROM ps_auths
UNION ALL
SELECT r.name, 'userpass', r.name, replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '')
FROM phones_removed r
WHERE NOT EXISTS (SELECT 1 FROM phones p WHERE p.name = r.name);

REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON asterisk_ps_endpoints, asterisk_ps_auths FROM CURRENT_USER;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'asterisk_ro') THEN
        GRANT SELECT ON asterisk_ps_endpoints, asterisk_ps_auths TO asterisk_ro;
    END IF;
END
$$;

-- 0005: the contact-center configuration as Asterisk's realtime drivers read it (res_config_pgsql).
--
-- Asterisk looks phones and queues up in PostgreSQL when it needs them (a REGISTER, an INVITE, a Queue() call),
-- so a row inserted into `phones` or `queues` works at once: no file is generated, nothing is reloaded.
-- These are VIEWS over our own tables: the tables keep our names, types and CHECK constraints; the views present
-- them in the column names Asterisk expects (sorcery field names for res_pjsip, queues.conf option names for
-- app_queue; app_queue turns `_` into `-`, so announce_position means announce-position).
--
-- Mapped in extconfig.conf:  ps_endpoints, ps_auths, ps_aors (sorcery.conf: res_pjsip endpoint/auth/aor, after
-- the static pjsip.conf that keeps the carrier trunk), queues => asterisk_queues, queue_rules => asterisk_queue_rules.
-- Queue members are NOT realtime: the service adds them over AMI (QueueAdd) from queue_members.
--
-- res_config_pgsql splits every value on ';' and skips NULL/empty values: values here never contain ';'
-- (names and passwords are restricted by CHECK constraints in 0003), and an option that must stay at Asterisk's
-- default is NULL.

-- ---------------------------------------------------------------- PJSIP (res_sorcery_realtime)
-- Column order matters for codecs: disallow is applied before allow.
CREATE VIEW ps_endpoints AS
SELECT p.name                                                    AS id,
       'transport-udp'::text                                     AS transport,
       p.name                                                    AS aors,
       p.name                                                    AS auth,
       CASE p.kind WHEN 'supervisor' THEN 'supervisors' ELSE 'agents' END AS context,
       'all'::text                                               AS disallow,
       'ulaw'::text                                              AS allow,
       'no'::text                                                AS direct_media,
       'yes'::text                                               AS rtp_symmetric,
       'yes'::text                                               AS force_rport,
       'yes'::text                                               AS rewrite_contact,
       'rfc4733'::text                                           AS dtmf_mode,
       'no'::text                                                AS allow_subscribe,
       'yes'::text                                               AS send_pai,
       'no'::text                                                AS trust_id_inbound,
       format('"%s" <%s>', p.name, p.name)                       AS callerid,
       NULL::text                                                AS mailboxes  -- res_pjsip_mwi filters on it
FROM phones p;

CREATE VIEW ps_auths AS
SELECT p.name              AS id,
       'userpass'::text    AS auth_type,
       p.name              AS username,
       p.password          AS password
FROM phones p;

-- qualify_frequency > 0 is required, not a nicety: res_pjsip's endpoint state (hence the device state app_queue
-- checks before ringing a member) is only tracked for AORs it knew at start-up, or -- for an AOR added later, like
-- a phone inserted while Asterisk runs -- once a registered contact of it is qualified. With 0, a new phone
-- registers but stays "Unavailable" and is never rung. Phones that do not answer OPTIONS are not rung either.
-- `contact` (static contacts: none) exists because res_pjsip asks for `contact != ''`.
CREATE VIEW ps_aors AS
SELECT p.name              AS id,
       1                   AS max_contacts,
       'yes'::text         AS remove_existing,
       30                  AS qualify_frequency,
       NULL::text          AS contact
FROM phones p;

-- ---------------------------------------------------------------- app_queue penalty rules (realtime_rules)
-- queues.escalation = [{"after_s": T, "min_level": L}, ...]: from T seconds of waiting, agents whose skill
-- level is >= L may take the call. A member's penalty is 5 - level, so that is max_penalty = 5 - L.
-- Malformed steps are left out rather than breaking the whole view (app_queue reads every rule at once).
-- app_queue reads these at module load and on `QueueReload Rules` only (see docs/architecture.md).
CREATE VIEW asterisk_queue_rules AS
SELECT q.name                                               AS rule_name,
       floor((step ->> 'after_s')::numeric)::int            AS "time",
       0                                                    AS min_penalty,
       5 - floor((step ->> 'min_level')::numeric)::int      AS max_penalty
FROM queues q
CROSS JOIN LATERAL jsonb_array_elements(
    CASE WHEN jsonb_typeof(q.escalation) = 'array' THEN q.escalation ELSE '[]'::jsonb END
) AS step
WHERE jsonb_typeof(step -> 'after_s') = 'number'
  AND jsonb_typeof(step -> 'min_level') = 'number'
  AND (step ->> 'after_s')::numeric BETWEEN 0 AND 86400
  AND (step ->> 'min_level')::numeric BETWEEN 1 AND 5;

-- ---------------------------------------------------------------- app_queue queues (realtime, read per use)
-- wrapuptime = 0: the service runs after-call work itself (it pauses the member).
-- Announcements only play when announce_frequency > 0, so it is set when one of them is wanted.
CREATE VIEW asterisk_queues AS
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
            THEN q.name END                                          AS defaultrule
FROM queues q;

-- ---------------------------------------------------------------- read-only for Asterisk
-- Simple views are auto-updatable in PostgreSQL: take write rights on them away from their owner, so nothing
-- reaching the database through Asterisk's realtime drivers can change a phone or a queue.
REVOKE INSERT, UPDATE, DELETE, TRUNCATE
    ON ps_endpoints, ps_auths, ps_aors, asterisk_queues, asterisk_queue_rules FROM CURRENT_USER;

-- A dedicated login role for Asterisk (SELECT on these views only) needs CREATEROLE, which the application role
-- does not have: when an administrator created `asterisk_ro`, it gets read access here.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'asterisk_ro') THEN
        GRANT SELECT ON ps_endpoints, ps_auths, ps_aors, asterisk_queues, asterisk_queue_rules TO asterisk_ro;
    END IF;
END
$$;

-- 0011: call recording (per-queue policy, PCI pauses, retention, erasure) and live supervision (ChanSpy).
--
-- Recording: a queue with recording = 'all' gets app_queue's `monitor-format = wav`: app_queue itself starts
-- MixMonitor on the caller's channel when an agent answers (option b: only bridged audio, i.e. both parties from
-- the agent's answer on; nothing is lost if the service is briefly away). 'on_demand' queues record only when
-- asked over the API (AMI MixMonitor); 'none' never. The files are 8 kHz 16-bit WAV (browsers play them) in the
-- PBX's monitor folder, which the service reads on the host. See docs/recording.md.

ALTER TABLE queues ADD COLUMN IF NOT EXISTS recording text NOT NULL DEFAULT 'all'
    CHECK (recording IN ('all', 'on_demand', 'none'));
ALTER TABLE queues ADD COLUMN IF NOT EXISTS recording_retention_days integer NOT NULL DEFAULT 90
    CHECK (recording_retention_days BETWEEN 1 AND 3650);

-- A supervisor's own phone: where listen/whisper/barge/takeover sessions ring.
ALTER TABLE api_users ADD COLUMN IF NOT EXISTS phone text REFERENCES phones (name) ON DELETE SET NULL;

-- ---------------------------------------------------------------- app_queue: `monitor-format` for recorded queues
-- Same as 0007 plus one column at the end; asterisk_queues_conf re-created to pick it up (option monitor-format).
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
       CASE WHEN q.callback_enabled THEN 'queue-callback' END        AS context,
       CASE WHEN q.recording = 'all' THEN 'wav' END                 AS monitor_format
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

-- ---------------------------------------------------------------- recordings
-- One row per recording. `file` is a bare name in the monitor folder (never a path: nothing else can be served).
--   recording  the call is up and MixMonitor runs
--   complete   the call ended and the file was measured (size, duration, checksum)
--   missing    the call ended and no file was found (e.g. the agent answered but no audio was ever bridged)
CREATE TABLE IF NOT EXISTS recordings (
    id                uuid PRIMARY KEY,
    node              text NOT NULL,
    linkedid          text NOT NULL CHECK (length(linkedid) BETWEEN 1 AND 150),
    uniqueid          text NOT NULL CHECK (length(uniqueid) BETWEEN 1 AND 150),  -- the recorded (caller's) channel
    queue             text,
    agent             text,
    caller            text NOT NULL DEFAULT '',
    trigger           text NOT NULL CHECK (trigger IN ('policy', 'on_demand')),
    started_by        text,
    file              text NOT NULL UNIQUE CHECK (file ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,119}\.wav$'),
    started_at        timestamptz NOT NULL,
    ended_at          timestamptz,
    duration_s        double precision,
    size_bytes        bigint,
    sha256            text CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    status            text NOT NULL DEFAULT 'recording' CHECK (status IN ('recording', 'complete', 'missing')),
    retention_days    integer NOT NULL DEFAULT 90 CHECK (retention_days BETWEEN 1 AND 3650)
);
CREATE INDEX IF NOT EXISTS recordings_started ON recordings (started_at);
CREATE INDEX IF NOT EXISTS recordings_linkedid ON recordings (linkedid);
CREATE INDEX IF NOT EXISTS recordings_caller ON recordings (caller);
CREATE INDEX IF NOT EXISTS recordings_agent ON recordings (agent, started_at);

-- PCI pauses: both directions muted (AMI MixMonitorMute); who paused and resumed, and when. `resumed_by` is
-- 'auto' when the configured maximum ran out, 'hangup' when the call ended paused.
CREATE TABLE IF NOT EXISTS recording_pauses (
    id             bigserial PRIMARY KEY,
    recording_id   uuid NOT NULL REFERENCES recordings (id) ON DELETE CASCADE,
    paused_at      timestamptz NOT NULL,
    paused_by      text NOT NULL,
    resumed_at     timestamptz,
    resumed_by     text
);
CREATE UNIQUE INDEX IF NOT EXISTS recording_pauses_one_open ON recording_pauses (recording_id) WHERE resumed_at IS NULL;

-- What happened to recordings beyond recording them: started/stopped on demand, paused, played, downloaded,
-- purged by retention, erased on request. Kept after the recording itself is gone (no foreign key).
CREATE TABLE IF NOT EXISTS recording_audit (
    id             bigserial PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT now(),
    actor          text NOT NULL,
    action         text NOT NULL CHECK (action IN ('start', 'stop', 'pause', 'resume', 'play', 'purge', 'erase')),
    recording_id   uuid,
    linkedid       text,
    detail         jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS recording_audit_at ON recording_audit (at);

-- ---------------------------------------------------------------- live supervision (ChanSpy)
-- One row per session (a supervisor's phone attached to one agent's call), one row per mode it was in.
CREATE TABLE IF NOT EXISTS supervision_sessions (
    id              uuid PRIMARY KEY,
    node            text NOT NULL,
    supervisor      text NOT NULL,
    agent           text NOT NULL,
    phone           text NOT NULL,
    linkedid        text NOT NULL,
    status          text NOT NULL DEFAULT 'ringing' CHECK (status IN ('ringing', 'active', 'ended', 'failed')),
    requested_at    timestamptz NOT NULL,
    started_at      timestamptz,
    ended_at        timestamptz,
    end_reason      text
);
CREATE INDEX IF NOT EXISTS supervision_sessions_requested ON supervision_sessions (requested_at);

CREATE TABLE IF NOT EXISTS supervision_modes (
    session_id   uuid NOT NULL REFERENCES supervision_sessions (id) ON DELETE CASCADE,
    mode         text NOT NULL CHECK (mode IN ('listen', 'whisper', 'barge', 'takeover')),
    started_at   timestamptz NOT NULL,
    ended_at     timestamptz,
    PRIMARY KEY (session_id, started_at)
);

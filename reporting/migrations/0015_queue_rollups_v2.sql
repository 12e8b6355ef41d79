-- 0015: rollups v2 (reporting/rollups.py): day levels at local midnights (origin_s), float8 millisecond sums,
-- per-row built_at, FCR bookkeeping in the state row, a (caller, end) index, TRUNCATE resets. Rollups are derived
-- data, so the v1 tables of 0014 are dropped and the next build_rollups starts from scratch.
DROP TABLE IF EXISTS queue_rollups, queue_rollup_state, queue_rollup_dirty CASCADE;

-- Rollups of queue_calls, so a queue report over a year reads sums instead of millions of facts. One row per
-- (level, block, queue). Levels: 15-minute and one-hour UTC blocks (span_s 900, 3600; origin_s 0), and 24-hour blocks
-- starting at origin_s seconds past UTC midnight (span_s 86400), one such level per local-midnight offset of the
-- time zones reports are made in (Europe/Berlin: 23:00 and 22:00 UTC). The rows cover the complete blocks before
-- queue_rollup_state.rolled_until; the report reads raw facts after it. Times are summed as integer milliseconds
-- (float8 holds such integer sums exactly), so a figure is the same from rollups or from facts.
CREATE TABLE IF NOT EXISTS queue_rollups (
    span_s           integer NOT NULL CHECK (span_s IN (900, 3600, 86400)),
    origin_s         integer NOT NULL DEFAULT 0 CHECK (origin_s >= 0 AND origin_s < 86400 AND origin_s % 900 = 0),
    bucket           timestamptz NOT NULL,     -- start of the block
    queue            text NOT NULL,
    offered          integer NOT NULL,
    answered         integer NOT NULL,
    abandoned        integer NOT NULL,         -- with the 5 s short-abandon threshold
    short_abandoned  integer NOT NULL,
    timeout          integer NOT NULL,         -- timeout or exit_empty
    transferred      integer NOT NULL,         -- answered and transferred by the agent
    wait_ms          double precision NOT NULL,  -- answered calls: sum and count of the known values
    wait_n           integer NOT NULL,
    talk_ms          double precision NOT NULL,
    talk_n           integer NOT NULL,
    hold_ms          double precision NOT NULL,
    hold_n           integer NOT NULL,
    acw_ms           double precision NOT NULL,
    acw_n            integer NOT NULL,
    aht_ms           double precision NOT NULL,  -- talk + hold + acw where all three are known
    aht_n            integer NOT NULL,
    max_wait_s       double precision,         -- any queue call
    abandon_wait_ms  double precision NOT NULL,  -- abandoned (not short) calls
    abandon_wait_n   integer NOT NULL,
    csat_n           integer NOT NULL,
    csat_good        integer NOT NULL,         -- score >= 4
    csat_sum         integer NOT NULL,
    -- FCR with the default window (604800 s): answered calls with a caller number and an end, of them those
    -- repeated by a call that entered before rolled_until (later repeats are added by the report), and the
    -- range of their ends (whether their windows have elapsed at the report's `now`).
    fcr_n            integer NOT NULL,
    fcr_rep          integer NOT NULL,
    fcr_ended_min    timestamptz,
    fcr_ended_max    timestamptz,
    -- answered_within[k + 1] = answered calls with wait_s <= k, k = 0..120 (a service level for any integer
    -- threshold up to 120 s)
    answered_within  integer[] NOT NULL CHECK (cardinality(answered_within) = 121),
    built_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (span_s, origin_s, bucket, queue)
);
CREATE INDEX IF NOT EXISTS queue_rollups_queue ON queue_rollups (span_s, origin_s, queue, bucket);
-- Buckets whose FCR calls straddle `now - window` (some windows elapsed, some not): the report reads them raw.
CREATE INDEX IF NOT EXISTS queue_rollups_fcr_ended ON queue_rollups
    USING gist (tstzrange(fcr_ended_min, fcr_ended_max, '[)')) WHERE fcr_n > 0;

-- rolled_until: every complete block before it is rolled up (NULL: nothing yet); day_origins: the origin_s of
-- the 24-hour levels built; fcr_ended_max: at least the latest fcr_ended_max of any row (how far after
-- rolled_until a call can still repeat a rolled-up one). One row.
CREATE TABLE IF NOT EXISTS queue_rollup_state (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    rolled_until   timestamptz,
    day_origins    integer[] NOT NULL DEFAULT '{}',
    fcr_ended_max  timestamptz,
    built_at       timestamptz
);
INSERT INTO queue_rollup_state (singleton) VALUES (true) ON CONFLICT DO NOTHING;

-- 15-minute buckets whose rollups may be stale: a fact in them changed, or a fact changed that can repeat one of
-- their answered calls (FCR). Filled by the trigger below, emptied by build_rollups; the report reads these
-- buckets raw until then.
CREATE TABLE IF NOT EXISTS queue_rollup_dirty (
    bucket  timestamptz PRIMARY KEY
);

-- The answered calls of a caller that ended in a time range: the calls a new call of that caller repeats (FCR),
-- looked up by the rollups' triggers and builder and by the report for the calls after rolled_until.
CREATE INDEX IF NOT EXISTS queue_calls_caller_ended ON queue_calls (caller_number, ended_at)
    WHERE caller_number <> '' AND outcome = 'answered';

-- A fact that entered at `entered` from `caller` changed: its bucket, and the buckets of the caller's answered
-- calls whose FCR window (604800 s after their end) holds `entered`.
CREATE OR REPLACE FUNCTION queue_rollup_mark(entered timestamptz, caller text) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO queue_rollup_dirty (bucket)
    SELECT date_bin('15 minutes', entered, timestamptz '2000-01-01 00:00:00+00')
    UNION
    SELECT date_bin('15 minutes', c.entered_at, timestamptz '2000-01-01 00:00:00+00') FROM queue_calls c
    WHERE caller <> '' AND c.caller_number <> '' AND c.outcome = 'answered' AND c.caller_number = caller
      AND c.ended_at >= entered - interval '604800 seconds' AND c.ended_at < entered
    ON CONFLICT DO NOTHING
$$;

CREATE OR REPLACE FUNCTION queue_rollup_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM queue_rollup_mark(OLD.entered_at, OLD.caller_number);
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        PERFORM queue_rollup_mark(NEW.entered_at, NEW.caller_number);
    END IF;
    RETURN NULL;
END
$$;

-- Only facts that entered more than 45 minutes ago can be in rolled-up buckets (build_rollups rolls up to an
-- hour before its start): the live path runs the function only for calls that last longer than that.
DROP TRIGGER IF EXISTS queue_rollup_ins ON queue_calls;
CREATE TRIGGER queue_rollup_ins AFTER INSERT ON queue_calls FOR EACH ROW
    WHEN (NEW.entered_at < now() - interval '45 minutes') EXECUTE FUNCTION queue_rollup_changed();
DROP TRIGGER IF EXISTS queue_rollup_del ON queue_calls;
CREATE TRIGGER queue_rollup_del AFTER DELETE ON queue_calls FOR EACH ROW
    WHEN (OLD.entered_at < now() - interval '45 minutes') EXECUTE FUNCTION queue_rollup_changed();
DROP TRIGGER IF EXISTS queue_rollup_upd ON queue_calls;
CREATE TRIGGER queue_rollup_upd AFTER UPDATE ON queue_calls FOR EACH ROW
    WHEN (OLD.entered_at < now() - interval '45 minutes' OR NEW.entered_at < now() - interval '45 minutes')
    EXECUTE FUNCTION queue_rollup_changed();

-- Emptying the facts empties the rollups: reports read raw facts until the next build starts from scratch.
CREATE OR REPLACE FUNCTION queue_rollup_reset() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE queue_rollup_state SET rolled_until = NULL, fcr_ended_max = NULL;
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS queue_rollup_truncate ON queue_calls;
CREATE TRIGGER queue_rollup_truncate AFTER TRUNCATE ON queue_calls FOR EACH STATEMENT
    EXECUTE FUNCTION queue_rollup_reset();

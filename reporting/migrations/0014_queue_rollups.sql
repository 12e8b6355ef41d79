-- 0014: rollups of queue_calls (reporting/rollups.py), so a queue report over a year reads sums instead of
-- millions of facts. One row per (span, UTC bucket, queue): span_s 900 (15 minutes) and 3600 (one hour); any
-- time zone whose offsets are multiples of 15 minutes builds its 15m/30m/1h/1d intervals from whole buckets.
-- The rows cover every bucket before queue_rollup_state.rolled_until; the report reads raw facts after it.
-- Times are summed as integer milliseconds (facts have millisecond precision), so sums are exact in any order
-- and a figure is the same whether it comes from rollups or from the facts.
CREATE TABLE IF NOT EXISTS queue_rollups (
    span_s           integer NOT NULL CHECK (span_s IN (900, 3600)),
    bucket           timestamptz NOT NULL,     -- start of the UTC bucket
    queue            text NOT NULL,
    offered          integer NOT NULL,
    answered         integer NOT NULL,
    abandoned        integer NOT NULL,         -- with the 5 s short-abandon threshold
    short_abandoned  integer NOT NULL,
    timeout          integer NOT NULL,         -- timeout or exit_empty
    transferred      integer NOT NULL,         -- answered and transferred by the agent
    wait_ms          bigint NOT NULL,          -- answered calls: sum and count of the known values
    wait_n           integer NOT NULL,
    talk_ms          bigint NOT NULL,
    talk_n           integer NOT NULL,
    hold_ms          bigint NOT NULL,
    hold_n           integer NOT NULL,
    acw_ms           bigint NOT NULL,
    acw_n            integer NOT NULL,
    aht_ms           bigint NOT NULL,          -- talk + hold + acw where all three are known
    aht_n            integer NOT NULL,
    max_wait_s       double precision,         -- any queue call
    abandon_wait_ms  bigint NOT NULL,          -- abandoned (not short) calls
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
    PRIMARY KEY (span_s, bucket, queue)
);
CREATE INDEX IF NOT EXISTS queue_rollups_queue ON queue_rollups (span_s, queue, bucket);
-- Buckets whose FCR calls straddle `now - window` (some windows elapsed, some not): the report reads them raw.
CREATE INDEX IF NOT EXISTS queue_rollups_fcr_ended ON queue_rollups
    USING gist (tstzrange(fcr_ended_min, fcr_ended_max, '[)')) WHERE fcr_n > 0;

-- rolled_until: every bucket before it is rolled up (NULL: nothing yet); one row.
CREATE TABLE IF NOT EXISTS queue_rollup_state (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    rolled_until  timestamptz,
    built_at      timestamptz
);
INSERT INTO queue_rollup_state (singleton) VALUES (true) ON CONFLICT DO NOTHING;

-- 15-minute buckets whose rollups may be stale: a fact in them changed, or a fact changed that can repeat one of
-- their answered calls (FCR). Filled by the trigger below, emptied by build_rollups; the report reads these
-- buckets raw until then.
CREATE TABLE IF NOT EXISTS queue_rollup_dirty (
    bucket  timestamptz PRIMARY KEY
);

CREATE OR REPLACE FUNCTION queue_rollup_mark(entered timestamptz, caller text) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO queue_rollup_dirty (bucket)
    SELECT date_bin('15 minutes', entered, timestamptz '2000-01-01 00:00:00+00')
    UNION
    SELECT date_bin('15 minutes', c.entered_at, timestamptz '2000-01-01 00:00:00+00') FROM queue_calls c
    WHERE caller <> '' AND c.caller_number <> '' AND c.caller_number = caller AND c.entered_at < entered
      AND c.outcome = 'answered'
      AND c.ended_at >= entered - interval '604800 seconds'
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
-- hour before its start): the live path, which writes recent calls, never runs the function.
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

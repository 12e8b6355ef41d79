-- 0012: queue-call facts (KPIS.md "Call facts"), projected from call_events by reporting/projector.py.
-- One row per caller's stay in one queue. Re-projecting a call replaces its rows (delete + insert of its
-- linkedid in one transaction), so the live path and a rebuild from events give the same rows.
CREATE TABLE IF NOT EXISTS queue_calls (
    node           text NOT NULL,
    linkedid       text NOT NULL,
    uniqueid       text NOT NULL,
    queue          text NOT NULL,
    caller_number  text NOT NULL DEFAULT '',
    entered_at     timestamptz NOT NULL,
    outcome        text CHECK (outcome IN ('answered', 'abandoned', 'short_abandoned', 'timeout', 'exit_empty',
                                           'transferred_out', 'callback_requested')),
    wait_s         double precision,
    agent          text,
    ring_s         double precision,
    talk_s         double precision,
    hold_s         double precision,
    acw_s          double precision,
    transferred    boolean NOT NULL DEFAULT false,
    disposition    text,
    csat           integer CHECK (csat BETWEEN 1 AND 5),
    ended_at       timestamptz,
    final          boolean NOT NULL DEFAULT false,
    projected_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (node, uniqueid, queue, entered_at)
);
CREATE INDEX IF NOT EXISTS queue_calls_entered ON queue_calls (entered_at, queue);
CREATE INDEX IF NOT EXISTS queue_calls_linkedid ON queue_calls (linkedid);
CREATE INDEX IF NOT EXISTS queue_calls_caller ON queue_calls (caller_number, entered_at) WHERE caller_number <> '';
CREATE INDEX IF NOT EXISTS queue_calls_open ON queue_calls (projected_at) WHERE NOT final;

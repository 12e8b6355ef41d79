-- 0013: ranges in which AMI events may be missing (the AMI connection was down). A row is opened (until NULL)
-- when the connection to a node's AMI drops and closed when it is back; reports list the rows overlapping
-- their range as `incomplete_ranges`, so a reader knows which figures may undercount. `reconciled_at`: when the
-- queue calls of the gap were rebuilt from queue_log (reporting/gaps.py); queue figures are whole again then,
-- agent states and IVR steps of the gap are not.
CREATE TABLE IF NOT EXISTS event_gaps (
    id     bigserial PRIMARY KEY,
    node   text NOT NULL,
    since  timestamptz NOT NULL,
    until  timestamptz,
    reconciled_at  timestamptz,
    CHECK (until IS NULL OR until >= since)
);
CREATE INDEX IF NOT EXISTS event_gaps_since ON event_gaps (since);
CREATE INDEX IF NOT EXISTS event_gaps_open ON event_gaps (node) WHERE until IS NULL;

-- Set when the gap was reconciled from queue_log (reporting/gaps.py): queue figures are whole again after it;
-- agents' states during the gap stay unknown.
ALTER TABLE event_gaps ADD COLUMN IF NOT EXISTS reconciled_at timestamptz;

-- 0001: the append-only event store.
--
-- One row per telephony event as the service received it (AMI today; FastAGI/IVR and app events
-- later).  Rows are never updated or deleted by the service: call facts and KPIs are projected from
-- here and can be re-projected at any time.
--
-- (node, event_key) is the idempotency key supplied by the writer: a replay of the same events
-- (reconnect, reconciliation from Asterisk's own records, a re-run importer) inserts nothing twice.
-- `node` names the Asterisk node / service instance, so several PBXs can share one database.
CREATE TABLE call_events (
    id          bigserial   PRIMARY KEY,
    node        text        NOT NULL,
    event_key   text        NOT NULL,
    name        text        NOT NULL,
    ts          timestamptz NOT NULL,          -- the event's own instant (AMI Timestamp header, µs)
    received_at timestamptz NOT NULL,          -- when the service received it (latency, ordering aid)
    uniqueid    text,
    linkedid    text,
    queue       text,
    fields      jsonb       NOT NULL,          -- every field of the event, as received (strings)
    CONSTRAINT call_events_node_event_key_key UNIQUE (node, event_key)
);

CREATE INDEX call_events_linkedid_idx ON call_events (linkedid);
CREATE INDEX call_events_ts_idx ON call_events (ts);
CREATE INDEX call_events_name_ts_idx ON call_events (name, ts);

-- IVR flows: a draft per flow, every published version kept (rollback = point at an older version).
CREATE TABLE IF NOT EXISTS ivr_flows (
    name               text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    draft              jsonb NOT NULL,
    draft_updated_at   timestamptz NOT NULL DEFAULT now(),
    published_version  integer,
    created_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS ivr_flow_versions (
    flow          text NOT NULL REFERENCES ivr_flows (name) ON DELETE CASCADE,
    version       integer NOT NULL CHECK (version >= 1),
    document      jsonb NOT NULL,
    published_at  timestamptz NOT NULL DEFAULT now(),
    published_by  text NOT NULL,
    PRIMARY KEY (flow, version)
);

ALTER TABLE ivr_flows
    ADD CONSTRAINT ivr_flows_published_fk FOREIGN KEY (name, published_version)
    REFERENCES ivr_flow_versions (flow, version) DEFERRABLE INITIALLY DEFERRED;

-- A route may send a DID to a flow (0003 added the column): it must exist and cannot be deleted while in use.
ALTER TABLE inbound_routes
    ADD CONSTRAINT inbound_routes_ivr_flow_fk FOREIGN KEY (ivr_flow) REFERENCES ivr_flows (name) ON DELETE RESTRICT;

-- Every step a caller takes through a flow (written by the FastAGI executor): IVR paths, containment, drop-offs.
CREATE TABLE IF NOT EXISTS ivr_steps (
    id        bigserial PRIMARY KEY,
    node      text NOT NULL,
    flow      text NOT NULL,
    version   integer NOT NULL,
    uniqueid  text NOT NULL,
    linkedid  text,
    step      integer NOT NULL,
    node_id   text NOT NULL,
    node_type text NOT NULL,
    input     text,
    outcome   text NOT NULL,
    at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (node, uniqueid, step)
);
CREATE INDEX IF NOT EXISTS ivr_steps_flow_at ON ivr_steps (flow, version, at);

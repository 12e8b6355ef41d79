-- Desired queue membership of agents: the source of truth re-applied to Asterisk after every (re)connect,
-- because Asterisk forgets dynamic members when it restarts (persistentmembers = no).
CREATE TABLE IF NOT EXISTS queue_members (
    node        text        NOT NULL,
    queue       text        NOT NULL,
    interface   text        NOT NULL,
    member_name text        NOT NULL,
    penalty     integer     NOT NULL DEFAULT 0 CHECK (penalty BETWEEN 0 AND 1000),
    since       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (node, queue, interface)
);

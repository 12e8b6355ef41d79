-- Post-call surveys (CSAT): the score a caller gave after the agent hung up, against that call.
CREATE TABLE IF NOT EXISTS call_surveys (
    node      text NOT NULL,
    linkedid  text NOT NULL,
    uniqueid  text NOT NULL,
    flow      text NOT NULL,
    version   integer NOT NULL,
    score     integer NOT NULL CHECK (score BETWEEN 1 AND 5),
    at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (node, uniqueid)
);
CREATE INDEX IF NOT EXISTS call_surveys_linkedid ON call_surveys (linkedid);

-- Messages callers left in an IVR flow (message/voicemail node): one WAV per call in the PBX's messages folder.
CREATE TABLE IF NOT EXISTS ivr_messages (
    node      text NOT NULL,
    uniqueid  text NOT NULL,
    linkedid  text,
    flow      text NOT NULL,
    version   integer NOT NULL,
    file      text NOT NULL CHECK (file ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,79}\.wav$'),
    at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (node, uniqueid)
);

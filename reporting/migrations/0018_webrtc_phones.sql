-- 0018: browser phones (WebRTC). A phone with webrtc = true registers over SIP on secure WebSocket (transport-wss,
-- pjsip.conf; Asterisk's TLS HTTP server, http.conf) and gets res_pjsip's `webrtc = yes`: ICE, AVPF, DTLS-SRTP with
-- an auto-generated certificate (fingerprint verified), rtcp-mux, media over the transport it registered on.
-- Codecs stay ulaw only (browsers offer PCMU): no transcoding, recordings and supervision work as for any phone.
-- A change applies to the phone's next REGISTER or call, like every phone setting (realtime, no reload).

ALTER TABLE phones ADD COLUMN IF NOT EXISTS webrtc boolean NOT NULL DEFAULT false;

-- The 0005 view with the same columns in the same order (only `transport` depends on the flag) and `webrtc` added
-- at the end (NULL = option left at Asterisk's default, i.e. off).
CREATE OR REPLACE VIEW ps_endpoints AS
SELECT p.name                                                    AS id,
       CASE WHEN p.webrtc THEN 'transport-wss' ELSE 'transport-udp' END AS transport,
       p.name                                                    AS aors,
       p.name                                                    AS auth,
       CASE p.kind WHEN 'supervisor' THEN 'supervisors' ELSE 'agents' END AS context,
       'all'::text                                               AS disallow,
       'ulaw'::text                                              AS allow,
       'no'::text                                                AS direct_media,
       'yes'::text                                               AS rtp_symmetric,
       'yes'::text                                               AS force_rport,
       'yes'::text                                               AS rewrite_contact,
       'rfc4733'::text                                           AS dtmf_mode,
       'no'::text                                                AS allow_subscribe,
       'yes'::text                                               AS send_pai,
       'no'::text                                                AS trust_id_inbound,
       format('"%s" <%s>', p.name, p.name)                       AS callerid,
       NULL::text                                                AS mailboxes,  -- res_pjsip_mwi filters on it
       CASE WHEN p.webrtc THEN 'yes' END                         AS webrtc
FROM phones p;

-- What extconfig.conf maps ps_endpoints to (0006): the view above plus the tombstones of removed phones.
CREATE OR REPLACE VIEW asterisk_ps_endpoints AS
SELECT * FROM ps_endpoints
UNION ALL
SELECT r.name, 'transport-udp', NULL, r.name, 'removed', 'all', 'ulaw', 'no', 'yes', 'yes', 'yes', 'rfc4733', 'no',
       'no', 'no', NULL, NULL, NULL
FROM phones_removed r
WHERE NOT EXISTS (SELECT 1 FROM phones p WHERE p.name = r.name);

-- Business lines (BRIEF section 2): accounts, SIP users, their numbers (DIDs), and the PJSIP
-- endpoints/auths/AORs/contacts that Asterisk reads live through realtime (res_config_pgsql).
-- The ps_* tables follow Asterisk's own alembic schema (contrib/ast-db-manage, config branch) with
-- every column res_pjsip 22 may read or write; enum columns are plain text here (Asterisk sends and
-- reads strings). callctl writes ps_* only from callctl/store/lines.py; never edit them by hand.

CREATE TABLE IF NOT EXISTS account (
    id             uuid PRIMARY KEY,
    name           text NOT NULL CHECK (name <> ''),
    country        char(2) NOT NULL CHECK (country ~ '^[A-Z]{2}$'),
    currency       text NOT NULL CHECK (currency IN ('EUR', 'CHF', 'GBP')),
    plan           text NOT NULL DEFAULT 'payg',
    extra_channels integer NOT NULL DEFAULT 0 CHECK (extra_channels >= 0),
    recording      boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS sip_user (
    id           uuid PRIMARY KEY,
    account_id   uuid NOT NULL REFERENCES account (id),
    name         text NOT NULL CHECK (name <> ''),
    sip_username text NOT NULL UNIQUE CHECK (sip_username ~ '^[a-z0-9][a-z0-9_.-]{2,39}$'),
    forward_to   text CHECK (forward_to ~ '^\+[1-9][0-9]{4,14}$'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    removed_at   timestamptz
);
CREATE INDEX IF NOT EXISTS sip_user_account ON sip_user (account_id);

CREATE TABLE IF NOT EXISTS did (
    number      text PRIMARY KEY CHECK (number ~ '^\+[1-9][0-9]{4,14}$'),
    user_id     uuid NOT NULL REFERENCES sip_user (id),
    assigned_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS did_user ON did (user_id);

-- Asterisk realtime: res_pjsip endpoint.
CREATE TABLE IF NOT EXISTS ps_endpoints (
    id varchar(40) NOT NULL UNIQUE,
    transport varchar(40), aors varchar(200), auth varchar(40), context varchar(40),
    disallow varchar(200), allow varchar(200), direct_media text, connected_line_method text,
    direct_media_method text, direct_media_glare_mitigation text, disable_direct_media_on_nat text,
    dtmf_mode text, external_media_address varchar(40), force_rport text, ice_support text,
    identify_by varchar(80), mailboxes varchar(40), moh_suggest varchar(40), outbound_auth varchar(40),
    outbound_proxy varchar(40), rewrite_contact text, rtp_ipv6 text, rtp_symmetric text,
    send_diversion text, send_pai text, send_rpid text, timers_min_se integer, timers text,
    timers_sess_expires integer, callerid varchar(40), callerid_privacy text, callerid_tag varchar(40),
    "100rel" text, aggregate_mwi text, trust_id_inbound text, trust_id_outbound text, use_ptime text,
    use_avpf text, media_encryption text, inband_progress text, call_group varchar(40),
    pickup_group varchar(40), named_call_group varchar(40), named_pickup_group varchar(40),
    device_state_busy_at integer, fax_detect text, t38_udptl text, t38_udptl_ec text,
    t38_udptl_maxdatagram integer, t38_udptl_nat text, t38_udptl_ipv6 text, tone_zone varchar(40),
    language varchar(40), one_touch_recording text, record_on_feature varchar(40),
    record_off_feature varchar(40), rtp_engine varchar(40), allow_transfer text, allow_subscribe text,
    sdp_owner varchar(40), sdp_session varchar(40), tos_audio varchar(10), tos_video varchar(10),
    sub_min_expiry integer, from_domain varchar(40), from_user varchar(40), mwi_from_user varchar(40),
    dtls_verify varchar(40), dtls_rekey varchar(40), dtls_cert_file varchar(200),
    dtls_private_key varchar(200), dtls_cipher varchar(200), dtls_ca_file varchar(200),
    dtls_ca_path varchar(200), dtls_setup text, srtp_tag_32 text, media_address varchar(40),
    redirect_method text, set_var text, cos_audio integer, cos_video integer,
    message_context varchar(40), force_avp text, media_use_received_transport text,
    accountcode varchar(80), user_eq_phone text, moh_passthrough text,
    media_encryption_optimistic text, rpid_immediate text, g726_non_standard text,
    rtp_keepalive integer, rtp_timeout integer, rtp_timeout_hold integer,
    bind_rtp_to_media_address text, voicemail_extension varchar(40),
    mwi_subscribe_replaces_unsolicited text, deny varchar(95), permit varchar(95), acl varchar(40),
    contact_deny varchar(95), contact_permit varchar(95), contact_acl varchar(40),
    subscribe_context varchar(40), fax_detect_timeout integer, contact_user varchar(80),
    preferred_codec_only text, asymmetric_rtp_codec text, rtcp_mux text, allow_overlap text,
    refer_blind_progress text, notify_early_inuse_ringing text, max_audio_streams integer,
    max_video_streams integer, webrtc text, dtls_fingerprint text, incoming_mwi_mailbox varchar(40),
    bundle text, dtls_auto_generate_cert text, follow_early_media_fork text,
    accept_multiple_sdp_answers text, suppress_q850_reason_headers text, trust_connected_line text,
    send_connected_line text, ignore_183_without_sdp text, codec_prefs_incoming_offer varchar(128),
    codec_prefs_outgoing_offer varchar(128), codec_prefs_incoming_answer varchar(128),
    codec_prefs_outgoing_answer varchar(128), stir_shaken text, send_history_info text,
    allow_unauthenticated_options text, t38_bind_udptl_to_media_address text
);

CREATE TABLE IF NOT EXISTS ps_auths (
    id varchar(40) NOT NULL UNIQUE,
    auth_type text, nonce_lifetime integer, md5_cred varchar(40), password varchar(80),
    realm varchar(40), username varchar(40), refresh_token varchar(255), oauth_clientid varchar(255),
    oauth_secret varchar(255), password_digest varchar(1024), supported_algorithms_uas varchar(1024),
    supported_algorithms_uac varchar(1024)
);

CREATE TABLE IF NOT EXISTS ps_aors (
    id varchar(40) NOT NULL UNIQUE,
    contact varchar(255), default_expiration integer, mailboxes varchar(80), max_contacts integer,
    minimum_expiration integer, remove_existing text, qualify_frequency integer,
    authenticate_qualify text, maximum_expiration integer, outbound_proxy varchar(40),
    support_path text, qualify_timeout float, voicemail_extension varchar(40),
    remove_unavailable text, qualify_2xx_only text
);
CREATE INDEX IF NOT EXISTS ps_aors_qualifyfreq_contact ON ps_aors (qualify_frequency, contact);

-- Registered phones: written by Asterisk itself on REGISTER, deleted by callctl when a user goes.
CREATE TABLE IF NOT EXISTS ps_contacts (
    id varchar(255) NOT NULL,
    uri varchar(511), expiration_time bigint, qualify_frequency integer, outbound_proxy varchar(40),
    path text, user_agent varchar(255), qualify_timeout float, reg_server varchar(255),
    authenticate_qualify text, via_addr varchar(40), via_port integer, call_id varchar(255),
    endpoint varchar(40), prune_on_boot text, qualify_2xx_only text,
    CONSTRAINT ps_contacts_uq UNIQUE (id, reg_server)
);
CREATE UNIQUE INDEX IF NOT EXISTS ps_contacts_id ON ps_contacts (id);
CREATE INDEX IF NOT EXISTS ps_contacts_qualifyfreq_exp ON ps_contacts (qualify_frequency, expiration_time);
CREATE INDEX IF NOT EXISTS ps_contacts_endpoint ON ps_contacts (endpoint);

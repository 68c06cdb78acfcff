-- Toll fraud and SIP attacks (issue 20, docs/security.md): destination permissions with their audit
-- trail, spend velocity limits, admitted calls (the counters), suspensions, warnings sent, refused
-- attempts, and the SIP addresses blocked at the edge. Every counter is read under an advisory lock
-- per account (callctl/store/fraud.py), so parallel calls and several engines share one count.

-- Permissions of an account (scope 'account') or of one of its SIP users (scope = the user id, which
-- replaces the account's for that user). No row: the defaults of a new account (callctl.fraud.rules).
CREATE TABLE fraud_permission (
    account_id  uuid        NOT NULL,
    scope       text        NOT NULL,
    permissions jsonb       NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, scope)
);

-- Velocity limits of an account (only the values set; the rest from the settings) and the address
-- its fraud alerts go to.
CREATE TABLE fraud_account (
    account_id    uuid        PRIMARY KEY,
    limits        jsonb       NOT NULL DEFAULT '{}',
    contact_email text,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Every change of permissions, limits, contact or suspension: who, when, before, after.
CREATE TABLE fraud_audit (
    id         bigserial   PRIMARY KEY,
    account_id uuid,
    scope      text        NOT NULL,
    what       text        NOT NULL,
    changed_by text        NOT NULL CHECK (changed_by <> ''),
    changed_at timestamptz NOT NULL DEFAULT now(),
    before     jsonb,
    after      jsonb
);
CREATE INDEX fraud_audit_account ON fraud_audit (account_id, changed_at);

-- One row per outbound call let through (the velocity counters): its channel, its credit hold, and
-- whether it is international. A call is "in progress" until its hold is settled or its CDR written.
CREATE TABLE fraud_admission (
    id             bigserial   PRIMARY KEY,
    account_id     uuid        NOT NULL,
    user_id        uuid,
    channel_id     text        NOT NULL,
    reservation_id uuid,
    destination    text        NOT NULL,
    international  boolean     NOT NULL,
    admitted_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX fraud_admission_account ON fraud_admission (account_id, admitted_at);
CREATE INDEX fraud_admission_reservation ON fraud_admission (reservation_id) WHERE reservation_id IS NOT NULL;

-- Outbound calls of an account suspended by a hard limit, until an operator releases them.
CREATE TABLE fraud_hold (
    id          bigserial   PRIMARY KEY,
    account_id  uuid        NOT NULL,
    rule        text        NOT NULL,
    reason      text        NOT NULL,
    held_at     timestamptz NOT NULL DEFAULT now(),
    released_at timestamptz,
    released_by text,
    note        text
);
CREATE UNIQUE INDEX fraud_hold_open ON fraud_hold (account_id) WHERE released_at IS NULL;

-- Warnings sent (one per account, rule and period).
CREATE TABLE fraud_alert (
    account_id uuid        NOT NULL,
    rule       text        NOT NULL,
    period     timestamptz NOT NULL,
    level      text        NOT NULL,
    reason     text        NOT NULL,
    sent_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, rule, period, level)
);

-- Every call attempt refused by a fraud rule (nothing lost: the CDR says it too).
CREATE TABLE fraud_refusal (
    id          bigserial   PRIMARY KEY,
    account_id  uuid        NOT NULL,
    user_id     uuid,
    at          timestamptz NOT NULL DEFAULT now(),
    path        text        NOT NULL,
    destination text        NOT NULL,
    rule        text        NOT NULL,
    reason      text        NOT NULL
);
CREATE INDEX fraud_refusal_account ON fraud_refusal (account_id, at);

-- SIP source addresses blocked at the edge after repeated authentication failures.
CREATE TABLE fraud_block (
    id         bigserial   PRIMARY KEY,
    address    inet        NOT NULL,
    failures   integer     NOT NULL,
    reason     text        NOT NULL,
    blocked_at timestamptz NOT NULL DEFAULT now(),
    until      timestamptz NOT NULL,
    lifted_at  timestamptz,
    lifted_by  text
);
CREATE INDEX fraud_block_address ON fraud_block (address, blocked_at);

-- SRTP (SDES) offered to every business-line phone: Asterisk adds SDES keys to its offers and accepts
-- encrypted or plain media from the phone (media_encryption_optimistic). `callctl fraud encryption
-- USER --require` makes it mandatory for one user (plain RTP refused, calls to the phone over TLS).
ALTER TABLE ps_endpoints ALTER COLUMN media_encryption SET DEFAULT 'sdes';
ALTER TABLE ps_endpoints ALTER COLUMN media_encryption_optimistic SET DEFAULT 'yes';
UPDATE ps_endpoints SET media_encryption = 'sdes', media_encryption_optimistic = 'yes'
 WHERE media_encryption IS NULL AND context = 'from-users';

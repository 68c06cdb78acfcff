-- Gating (BRIEF sections 3 and 5): account emergency status, dialer profile, decision records,
-- the opposition list (versioned; one LIST partition per version, a pointer names the live one) and
-- per-account exceptions (existing customers, recorded consent).

CREATE TABLE IF NOT EXISTS account_emergency (
    account_id  uuid PRIMARY KEY REFERENCES account (id),
    enabled     boolean NOT NULL DEFAULT false,
    location    text,
    verified_at timestamptz,  -- when the location was proved; NULL: not proved
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS account_dialer (
    account_id uuid PRIMARY KEY REFERENCES account (id),
    automated  boolean NOT NULL DEFAULT false,
    sector     text,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Every decision the gates record: every refusal, every automated call (the per-callee cap counts the
-- allowed ones), every emergency call. No foreign key: an audit record must never fail to be written.
CREATE TABLE IF NOT EXISTS gating_decision (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id   uuid NOT NULL,
    decided_at   timestamptz NOT NULL,
    caller       text NOT NULL,
    callee       text NOT NULL,
    decision     text NOT NULL CHECK (decision IN ('allow', 'deny')),
    rule         text NOT NULL,
    reason       text NOT NULL,
    emergency    boolean NOT NULL,
    automated    boolean NOT NULL,
    illegitimate boolean NOT NULL DEFAULT false,  -- a dialer attempt the rules refused (penalised)
    list_version bigint,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS gating_decision_cap ON gating_decision (account_id, callee, decided_at)
    WHERE decision = 'allow' AND automated;
CREATE INDEX IF NOT EXISTS gating_decision_account ON gating_decision (account_id, decided_at);

CREATE TABLE IF NOT EXISTS optout_list (
    version      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source       text NOT NULL,
    numbers      bigint,
    rejected     bigint,
    started_at   timestamptz NOT NULL DEFAULT now(),
    activated_at timestamptz
);

-- One partition per list version (optout_number_v<N>), attached when complete; old ones are dropped.
CREATE TABLE IF NOT EXISTS optout_number (
    version bigint NOT NULL,
    number  text NOT NULL,
    PRIMARY KEY (version, number)
) PARTITION BY LIST (version);

-- The live list version: one row, switched in the same transaction that attaches the new partition.
CREATE TABLE IF NOT EXISTS optout_current (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version   bigint REFERENCES optout_list (version)
);
INSERT INTO optout_current (singleton, version) VALUES (true, NULL) ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS optout_exception (
    account_id  uuid NOT NULL,
    number      text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('customer', 'consent')),
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, number)
);

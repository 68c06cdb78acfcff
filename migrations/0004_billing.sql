-- Billing (BRIEF section 4): rate decks, prepaid credit ledger and reservations.
-- Accounts live in 0003_lines.sql; billing references them by account_id uuid without a foreign
-- key so that credit history survives whatever happens to the account row (it is proof of payment).

-- One imported deck version. The deck in force at an instant is the one with the latest
-- effective_at not after it (ties: the latest import), so a future deck takes over at that instant.
CREATE TABLE rate_deck (
    id           bigserial   PRIMARY KEY,
    name         text        NOT NULL CHECK (name <> ''),
    effective_at timestamptz NOT NULL,
    imported_at  timestamptz NOT NULL DEFAULT now(),
    source       text        NOT NULL,
    row_count    integer     NOT NULL
);
CREATE INDEX rate_deck_effective ON rate_deck (effective_at, id);

CREATE TABLE rate (
    deck_id         bigint        NOT NULL REFERENCES rate_deck (id) ON DELETE CASCADE,
    prefix          text          NOT NULL CHECK (prefix ~ '^[0-9]{1,15}$'),
    destination     text          NOT NULL,
    zone            text          NOT NULL,
    rate_per_minute numeric(14,6) NOT NULL CHECK (rate_per_minute >= 0),
    currency        text          NOT NULL CHECK (currency IN ('EUR', 'CHF', 'GBP')),
    connect_fee     numeric(14,6) NOT NULL DEFAULT 0 CHECK (connect_fee >= 0),
    first_block_s   integer       NOT NULL DEFAULT 1 CHECK (first_block_s >= 1),
    increment_s     integer       NOT NULL DEFAULT 1 CHECK (increment_s >= 1),
    per_call        numeric(14,6) NOT NULL DEFAULT 0 CHECK (per_call >= 0),
    PRIMARY KEY (deck_id, prefix)
);

-- The balance row is the lock: reserve and settle take it FOR UPDATE, so concurrent calls on one
-- balance are serialised and `balance - reserved` can never go below zero (CHECK as a last guard).
CREATE TABLE credit_balance (
    account_id uuid          PRIMARY KEY,
    currency   text          NOT NULL CHECK (currency IN ('EUR', 'CHF', 'GBP')),
    balance    numeric(16,4) NOT NULL DEFAULT 0,
    reserved   numeric(16,4) NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    updated_at timestamptz   NOT NULL DEFAULT now(),
    CHECK (balance - reserved >= 0)
);

-- Every movement of credit: top-ups (positive) and settled call costs (negative). Append-only;
-- the balance equals the sum of an account's entries.
CREATE TABLE credit_ledger (
    id             bigserial     PRIMARY KEY,
    account_id     uuid          NOT NULL,
    at             timestamptz   NOT NULL DEFAULT now(),
    kind           text          NOT NULL CHECK (kind IN ('credit', 'call')),
    amount         numeric(16,4) NOT NULL,
    reservation_id uuid,
    note           text
);
CREATE INDEX credit_ledger_account ON credit_ledger (account_id, at);

-- A hold on the balance for one authorised call; settled once with the call's true cost
-- (never more than the amount held).
CREATE TABLE credit_reservation (
    id          uuid          PRIMARY KEY,
    account_id  uuid          NOT NULL,
    amount      numeric(16,4) NOT NULL CHECK (amount >= 0),
    max_seconds integer       NOT NULL,
    rate        jsonb         NOT NULL,
    created_at  timestamptz   NOT NULL DEFAULT now(),
    settled_at  timestamptz,
    cost        numeric(16,4),
    billed_s    integer
);
CREATE INDEX credit_reservation_open ON credit_reservation (account_id) WHERE settled_at IS NULL;

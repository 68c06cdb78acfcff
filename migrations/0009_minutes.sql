-- Organizer-paid dial-in (issue 10): free-minutes pools of organizer accounts, drawn per second by
-- the conference legs that call an organizer-paid access number.
-- Like credit_balance (0004_billing.sql): the pool row is the lock. A leg holds a bounded slice of
-- seconds (minutes_hold) taken under SELECT ... FOR UPDATE of the pool row, extends it slice by
-- slice while it stays, and settles the seconds it really used; so concurrent legs of any number
-- of conferences can never overdraw a pool. Accounts are referenced by uuid without a foreign key
-- (the pool's history is proof of what the organizer paid for).

CREATE TABLE minutes_pool (
    account_id  uuid        PRIMARY KEY,
    balance_s   bigint      NOT NULL DEFAULT 0,
    reserved_s  bigint      NOT NULL DEFAULT 0 CHECK (reserved_s >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (balance_s - reserved_s >= 0)
);

-- One leg's hold on a pool: held_s seconds granted so far; settled once with the seconds used
-- (never more than held).
CREATE TABLE minutes_hold (
    id             uuid        PRIMARY KEY,
    account_id     uuid        NOT NULL,
    conference_id  uuid        NOT NULL,
    leg_id         uuid        NOT NULL,
    access_number  text        NOT NULL,
    person         text        NOT NULL,
    held_s         bigint      NOT NULL CHECK (held_s > 0),
    created_at     timestamptz NOT NULL DEFAULT now(),
    settled_at     timestamptz,
    used_s         bigint      CHECK (used_s >= 0 AND used_s <= held_s)
);
CREATE INDEX minutes_hold_open ON minutes_hold (account_id) WHERE settled_at IS NULL;
CREATE INDEX minutes_hold_leg ON minutes_hold (leg_id);

-- Every movement of a pool: purchases (positive seconds) and settled legs (negative seconds).
-- Append-only; a pool's balance equals the sum of its entries.
CREATE TABLE minutes_ledger (
    id            bigserial   PRIMARY KEY,
    account_id    uuid        NOT NULL,
    at            timestamptz NOT NULL DEFAULT now(),
    kind          text        NOT NULL CHECK (kind IN ('purchase', 'leg')),
    seconds       bigint      NOT NULL,
    hold_id       uuid        UNIQUE,
    conference_id uuid,
    note          text
);
CREATE INDEX minutes_ledger_account ON minutes_ledger (account_id, at);

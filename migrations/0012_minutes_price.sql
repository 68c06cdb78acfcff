-- Free-minutes purchases carry what they cost (issue 10 follow-up): the price agreed for the minutes
-- bought (excluding VAT) and its ISO 4217 currency, per purchase on the pool's ledger. Optional:
-- purchases recorded before, or without a price, keep both empty. Legs never carry a price.
-- numeric without a fixed scale keeps the currency's decimals as given (120.00 EUR, 1500 JPY).
ALTER TABLE minutes_ledger
    ADD COLUMN price    numeric CHECK (price >= 0 AND price < 1e12),
    ADD COLUMN currency text CHECK (currency ~ '^[A-Z]{3}$'),
    ADD CONSTRAINT minutes_ledger_price_currency CHECK ((price IS NULL) = (currency IS NULL)),
    ADD CONSTRAINT minutes_ledger_price_purchase CHECK (price IS NULL OR kind = 'purchase');

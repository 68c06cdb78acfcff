"""Billing: rate decks, per-second rating, plans, prepaid credit and monthly statements."""

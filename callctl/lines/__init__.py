"""Business lines (BRIEF section 2): accounts, SIP users and their numbers; rules in ``accounts``."""

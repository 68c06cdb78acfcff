-- SIP users registering through Kamailio (issue 18, docs/scaling.md "SIP users through Kamailio"):
-- Kamailio adds a Path header (itself, with the address the phone registered from) to each REGISTER.
-- Asterisk stores a Path with the contact, and sends requests to the user along it, only when the
-- user's AOR has support_path = yes; otherwise a node sends the call to the contact's address, which a
-- phone behind NAT does not answer and which, with rewrite_contact, is Kamailio's own address.
-- Harmless without a proxy: a REGISTER without Path is stored as before. Safe to run again.
ALTER TABLE ps_aors ALTER COLUMN support_path SET DEFAULT 'yes';
UPDATE ps_aors SET support_path = 'yes' WHERE support_path IS NULL;

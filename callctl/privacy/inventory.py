"""Every place callctl keeps personal data: what, why, for how long and which command deletes it.

The single source for ``docs/privacy.md`` (its table is ``markdown_table()``, checked by a test) and
for ``callctl privacy inventory`` (each database item's ``key`` names a census in the store).
"""

from __future__ import annotations

from dataclasses import dataclass

ERASE = "`callctl privacy erase`"
PURGE = "`callctl suspension purge`"


@dataclass(frozen=True)
class Item:
    key: str  # stable id; the census of database items in callctl.store.privacy uses it
    kind: str  # "table", "file" or "log"
    where: str  # table.column(s), a path under a setting, or a log field
    holds: str  # the personal data
    why: str
    retention: str
    deleted_by: str


ITEMS: tuple[Item, ...] = (
    Item("conference_organizer", "table", "conference.organizer_email, conference.subject",
         "organizer e-mail address; a meeting subject may name people",
         "send the organizer its code and the access numbers; cancel, re-issue",
         "until the organizer is erased (no automatic expiry yet)",
         f"{ERASE} --email (deletes the organizer's conferences with their codes and timeline)"),
    Item("conference_code", "table", "conference_code.email, conference_code.code",
         "invitee e-mail addresses and their confidential personal access codes",
         "admit a caller to the right conference with the right role",
         "with the conference", f"{ERASE} --email"),
    Item("conference_event", "table", "conference_event.person",
         "who joined and left a conference, and when", "the conference timeline shown to the organizer",
         "with the conference", f"{ERASE} --email"),
    Item("conference_link", "table", "conference_link.email, .last_opened_at; conference_space_session",
         "invitees' e-mail addresses, when they opened their Online Space link (tokens and sessions only as "
         "SHA-256 hashes)", "open the conference's Online Space with a personal link",
         "with the conference (a link opens until `space_link_valid_after_s` after the end)",
         f"{ERASE} --email; `conference reissue`/`cancel` end the links"),
    Item("conference_message", "table", "conference_message.author, .body",
         "chat messages of the conference's members (may name people)",
         "the Online Space's chat; evidence in a dispute (BRIEF 1)", "with the conference", f"{ERASE} --email"),
    Item("conference_document", "table", "conference_document.uploaded_by, .name, .content",
         "documents shared by members (any personal data they contain), their names and uploader",
         "the Online Space's document sharing; evidence in a dispute (BRIEF 1)", "with the conference",
         f"{ERASE} --email"),
    Item("conference_attempt", "table", "conference_attempt.caller",
         "caller numbers that keyed a wrong code", "brute-force lockout and abuse audit",
         "until erased (lockout only reads the last window)", f"{ERASE} --number"),
    Item("cdr_number", "table", "cdr.from_number, cdr.to_number, cdr.extra",
         "calling and called phone numbers with times and durations",
         "billing: proof of use, invoices and disputes (BRIEF 4)",
         "12 months (monthly partitions); erasure within them pseudonymises",
         f"{ERASE} --number, {PURGE} (pseudonymise within 12 months, delete older)"),
    Item("cdr_person", "table", "cdr.person",
         "e-mail address of a conference participant on that leg", "free-minute billing per participant",
         "12 months", f"{ERASE} --email (pseudonymised)"),
    Item("account", "table", "account.name", "customer (business or person) name",
         "contract, invoices", "contract; pseudonymised by the purge one month after suspension", PURGE),
    Item("sip_user", "table", "sip_user.name, sip_user.forward_to",
         "user names and the number calls are forwarded to", "ring the right phone, forward calls",
         "contract; one month after suspension", f"{PURGE}; `callctl user remove` frees numbers"),
    Item("did", "table", "did.number", "the user's phone numbers", "route inbound calls",
         "contract; one month after suspension", f"{PURGE}; `callctl user remove`"),
    Item("sip_credentials", "table", "ps_auths.password, ps_endpoints.callerid",
         "SIP passwords and caller-id names", "authenticate the phone (Asterisk realtime)",
         "contract; one month after suspension", f"{PURGE}; `callctl user remove`"),
    Item("sip_registration", "table", "ps_contacts.uri, ps_contacts.user_agent, ps_contacts.via_addr",
         "the phone's IP address and user agent", "reach the registered phone (written by Asterisk)",
         "until the registration expires", f"{PURGE}; `callctl user remove`"),
    Item("credit", "table", "credit_balance, credit_ledger, credit_reservation",
         "prepaid credit and top-ups of an account", "a call must not run past its credit",
         "12 months (proof of payment)", f"{PURGE} (balance and holds; ledger entries older than 12 months)"),
    Item("gating_decision", "table", "gating_decision.caller, gating_decision.callee",
         "who an account's dialer or phone called (or tried to), with the gate's decision",
         "dialer compliance: the 4-calls-in-30-days cap, refusal records, penalties (BRIEF 5)",
         "no automatic expiry yet; erasure pseudonymises rows older than 30 days (the cap still protects "
         "the person meanwhile)", f"{ERASE} --number, {PURGE}"),
    Item("optout_number", "table", "optout_number.number (current list version)",
         "numbers of people who opposed canvassing (BLOCTEL)", "never canvass them (BRIEF 5)",
         "until the next import replaces the list version", "`callctl optout import` (a new version "
         "replaces the old one); never erased on request: that would let dialers call the person"),
    Item("optout_exception", "table", "optout_exception.number",
         "an account's customers and people who consented to its calls", "exceptions to the opposition list",
         "contract", f"{ERASE} --number, {PURGE}"),
    Item("emergency_location", "table", "account_emergency.location; its copy in ps_endpoints.set_var",
         "the address where the line is used", "sent with emergency calls (BRIEF 3)",
         "contract; one month after suspension", f"`callctl account emergency ID --disable`, {PURGE}"),
    Item("asterisk_emergency_call", "table", "asterisk_emergency_call.caller, .callee",
         "emergency calls Asterisk decided while the engine was down", "copied into gating_decision",
         "until copied (then erasable)", f"{ERASE} --number, {PURGE}"),
    Item("asterisk_cel", "table", "cel.cid_num, cel.cid_ani, cel.cid_dnid, cel.exten, cel.channame",
         "Asterisk's channel events: calling and called numbers with times", "`callctl cdr reconcile`",
         "35 days", f"`callctl cdr retention`, {ERASE} --number (E.164 forms only)"),
    Item("open_call", "table", "open_call.entry (caller, called, channel)",
         "calling and called numbers of calls in progress", "record every call even if the engine's machine "
         "is lost (docs/scaling.md)", "until the call's CDR is in PostgreSQL (seconds); a dead node's rows until "
         "another engine takes them over (node_takeover_s)", "none needed: rows go as their calls are recorded"),
    Item("privacy_audit", "table", "privacy_audit.subject", "pseudonyms of erased people and purged accounts",
         "prove that exports, erasures and purges happened", "kept (holds no identifier in clear)", "none"),
    Item("outbox", "file", "outbox_dir/*.eml", "booking messages: e-mail addresses, subject, access codes; "
         "voicemail e-mails: the caller's number and the message's audio",
         "delivery to the organizer and each invitee, and to voicemail box owners (kept when no SMTP relay "
         "is configured)",
         "until delivered or erased", f"{ERASE} --email (files naming the address)"),
    Item("cdr_spool", "file", "spool_dir/cdr-*.copy, spool_dir/rejected.jsonl, open-calls journal",
         "CDRs (phone numbers) not yet in PostgreSQL", "no CDR lost while PostgreSQL is down",
         "until acknowledged by PostgreSQL (segments are then removed)", "the CDR writer"),
    Item("recording", "file", "recordings_dir/*.WAV; recording, recording_notice.party; voicemail_message",
         "conference and call audio; voicemail messages (the caller's voice, number, the number called, "
         "the box owner's e-mail); who heard the recording notice (e-mail) and objected",
         "on the organizer's request / per-account option (BRIEF 1, 2); messages callers chose to leave",
         "6 months (conferences), 3 months (calls, voicemail); an account's call recordings when its option "
         "ends",
         f"`callctl recordings purge`, `callctl recordings delete`, `callctl voicemail delete`, {ERASE}, {PURGE}"),
    Item("log_caller", "log", "call_started.caller and other *caller*/*number* fields",
         "phone numbers, masked except their last 4 digits", "operations (journald)",
         "journald retention", "journald rotation (`journalctl --vacuum-time`)"),
)

NEVER_LOGGED = ("access codes", "SIP passwords", "recording contents", "e-mail bodies", "Online Space link tokens")


def by_key(key: str) -> Item:
    for item in ITEMS:
        if item.key == key:
            return item
    raise KeyError(key)


def markdown_table() -> str:
    """The inventory as the Markdown table of docs/privacy.md."""
    lines = ["| Item | Kind | Where | Holds | Why | Kept | Deleted by |", "|---|---|---|---|---|---|---|"]
    for i in ITEMS:
        lines.append(f"| `{i.key}` | {i.kind} | {i.where} | {i.holds} | {i.why} | {i.retention} | {i.deleted_by} |")
    return "\n".join(lines) + "\n"

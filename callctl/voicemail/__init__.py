"""Voicemail: the ``voicemail`` flow step, its messages (recordings of their own retention class)
and their delivery by e-mail to the box's owner (docs/dialplan.md#voicemail)."""

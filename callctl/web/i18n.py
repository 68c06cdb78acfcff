"""The Online Space's words in English and French (the conference's language decides)."""

from __future__ import annotations

TEXT: dict[str, dict[str, str]] = {
    "en": {
        "space": "Online Space", "dial": "Dial in", "numbers": "Call one of these numbers",
        "your_code": "then key your personal code followed by #", "organizer_badge": "Organizer",
        "confidential": "This page and its link are personal and confidential: do not share them. "
                        "Opening it, like keying your code, means using the service.",
        "in_call": "In the call", "nobody": "Nobody is in the call yet.", "muted": "muted",
        "waiting": "waiting for the organizer", "joined": "joined", "you": "you",
        "mute": "Mute", "unmute": "Unmute", "remove": "Remove", "mute_me": "Mute me", "unmute_me": "Unmute me",
        "controls": "Organizer controls", "mute_all": "Mute all participants", "unmute_all": "Unmute all participants",
        "lock": "Lock the room", "unlock": "Unlock the room", "record": "Start recording",
        "stop_recording": "Stop recording", "end": "End the call for everyone",
        "confirm_end": "End the call for everyone?", "locked": "The room is locked: newcomers are refused.",
        "recording": "This call is being recorded.",
        "documents": "Documents", "no_documents": "No document shared yet.", "upload": "Share a document",
        "file": "File", "send_file": "Upload",
        "limits": "Up to {size} MB each, {count} per conference: {types}.",
        "messages": "Messages", "no_messages": "No message yet.", "message": "Your message", "send": "Send",
        "by": "by", "when": "When", "live_lost": "Live updates interrupted, reconnecting…",
        "done": "Done.", "forbidden": "Only the organizer can do that.",
        "not_in_call": "That person is not in the call.",
        "no_live_room": "Nobody is in the call right now.", "failed": "That did not work: try again.",
        "unavailable": "Recording is not available.", "ended": "The call has ended.",
        "owner_unreachable": "The server holding the call did not answer: nothing was changed. Try again in a "
                             "few seconds.",
        "owner_lost": "The server holding the call stopped while doing it: check the call before trying again.",
        "bad_csrf": "This page is out of date: reload it and try again.",
        "too_many": "Too many attempts: wait a few minutes and try again.",
        "too_big": "That file is too large.", "bad_type": "That type of file is not accepted.",
        "too_many_docs": "This conference already has the maximum number of documents.",
        "empty": "Nothing to send.", "too_long": "That message is too long.",
        "link_title": "This link no longer opens",
        "link_replaced": "This personal link was replaced by a newer one. Use the link in your latest message, "
                         "or ask the organizer to send you a new one.",
        "link_expired": "This conference is over and its Online Space has closed.",
        "link_cancelled": "This conference was cancelled.",
        "link_unknown": "This link is not valid. Check that you copied it completely, or use the link in your "
                        "latest message.",
        "no_session": "Open the Online Space with the personal link from your message.",
        "slow_down": "Too many attempts from your connection: wait a few minutes and try again.",
        "gone": "Your link was replaced or the conference closed: use the link in your latest message.",
        "moved": "This page stopped following the call: you opened the Online Space in another window. "
                 "Reload to follow it here.",
        "skip": "Skip to the call", "unknown_action": "Unknown action.",
        "store_down": "The Online Space is unavailable for a moment: try again in a minute. "
                      "The call itself is not affected.",
    },
    "fr": {
        "space": "Espace en ligne", "dial": "Pour participer", "numbers": "Appelez l'un de ces numéros",
        "your_code": "puis tapez votre code personnel suivi de #", "organizer_badge": "Organisateur",
        "confidential": "Cette page et son lien sont personnels et confidentiels : ne les partagez pas. "
                        "L'ouvrir, comme taper votre code, vaut utilisation du service.",
        "in_call": "Dans l'appel", "nobody": "Personne n'est encore dans l'appel.", "muted": "micro coupé",
        "waiting": "attend l'organisateur", "joined": "arrivé à", "you": "vous",
        "mute": "Couper le micro", "unmute": "Rétablir le micro", "remove": "Exclure",
        "mute_me": "Couper mon micro", "unmute_me": "Rétablir mon micro",
        "controls": "Commandes de l'organisateur", "mute_all": "Couper le micro des participants",
        "unmute_all": "Rétablir le micro des participants", "lock": "Verrouiller la conférence",
        "unlock": "Déverrouiller la conférence", "record": "Démarrer l'enregistrement",
        "stop_recording": "Arrêter l'enregistrement", "end": "Terminer l'appel pour tous",
        "confirm_end": "Terminer l'appel pour tous ?",
        "locked": "La conférence est verrouillée : les nouveaux arrivants sont refusés.",
        "recording": "Cet appel est enregistré.",
        "documents": "Documents", "no_documents": "Aucun document partagé.", "upload": "Partager un document",
        "file": "Fichier", "send_file": "Envoyer",
        "limits": "Jusqu'à {size} Mo chacun, {count} par conférence : {types}.",
        "messages": "Messages", "no_messages": "Aucun message.", "message": "Votre message", "send": "Envoyer",
        "by": "par", "when": "Quand", "live_lost": "Mises à jour interrompues, reconnexion…",
        "done": "C'est fait.", "forbidden": "Seul l'organisateur peut faire cela.",
        "not_in_call": "Cette personne n'est pas dans l'appel.", "no_live_room": "Personne n'est dans l'appel.",
        "failed": "Cela n'a pas fonctionné : réessayez.", "unavailable": "L'enregistrement n'est pas disponible.",
        "owner_unreachable": "Le serveur qui tient l'appel n'a pas répondu : rien n'a changé. Réessayez dans "
                             "quelques secondes.",
        "owner_lost": "Le serveur qui tient l'appel s'est arrêté pendant l'opération : vérifiez l'appel avant "
                      "de réessayer.",
        "ended": "L'appel est terminé.", "bad_csrf": "Cette page n'est plus à jour : rechargez-la et réessayez.",
        "too_many": "Trop de tentatives : patientez quelques minutes.",
        "too_big": "Ce fichier est trop volumineux.", "bad_type": "Ce type de fichier n'est pas accepté.",
        "too_many_docs": "Cette conférence a déjà le nombre maximal de documents.",
        "empty": "Rien à envoyer.", "too_long": "Ce message est trop long.",
        "link_title": "Ce lien ne s'ouvre plus",
        "link_replaced": "Ce lien personnel a été remplacé par un nouveau. Utilisez le lien de votre dernier message "
                         "ou demandez-en un nouveau à l'organisateur.",
        "link_expired": "Cette conférence est terminée et son espace en ligne est fermé.",
        "link_cancelled": "Cette conférence a été annulée.",
        "link_unknown": "Ce lien n'est pas valide. Vérifiez qu'il est complet, ou utilisez le lien de votre "
                        "dernier message.",
        "no_session": "Ouvrez l'espace en ligne avec le lien personnel de votre message.",
        "slow_down": "Trop de tentatives depuis votre connexion : patientez quelques minutes.",
        "gone": "Votre lien a été remplacé ou la conférence est close : utilisez le lien de votre dernier message.",
        "moved": "Cette page ne suit plus l'appel : vous avez ouvert l'espace en ligne dans une autre fenêtre. "
                 "Rechargez-la pour le suivre ici.",
        "skip": "Aller à l'appel", "unknown_action": "Action inconnue.",
        "store_down": "L'espace en ligne est momentanément indisponible : réessayez dans une minute. "
                      "L'appel lui-même n'est pas affecté.",
    },
}


def words(language: str) -> dict[str, str]:
    return TEXT.get(language, TEXT["en"])

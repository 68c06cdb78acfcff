"""Recording of calls and conferences: notice, capture, retention (issue 7)."""

"""The parsers of the dialplan's sections, one module per concept: countries, prompts, numbers,
flows (and their steps), and the time windows they share."""

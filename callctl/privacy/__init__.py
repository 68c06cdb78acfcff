"""Personal data: where it lives (inventory), pseudonyms and retention dates (rules), and the
`callctl privacy` / `callctl suspension` commands that export, erase and purge it."""

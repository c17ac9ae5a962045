"""Schema revisions of the release records, oldest first (0001, 0002, ...)."""

"""Releases: the spec a user gives, the state machine that carries it out, retirement of old versions."""

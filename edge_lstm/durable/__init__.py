"""Durable state on disk: the journal, checkpoints and the spill store for evicted streams."""

"""Pure planning cores: they take ``now`` and plain data and return decisions, no I/O."""

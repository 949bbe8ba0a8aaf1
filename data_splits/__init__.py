"""data_splits."""

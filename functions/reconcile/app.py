"""Handler placeholder until its capability lands."""

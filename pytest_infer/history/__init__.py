"""The vendor's view over time: every run appended to a history directory, read back as trends."""

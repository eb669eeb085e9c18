"""Feature corpora, memory-mapped crops, episodic sampling and safe file writing."""

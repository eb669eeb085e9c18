"""Feature corpora, crops read with positioned reads, episodic sampling and safe file writing."""

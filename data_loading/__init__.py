"""Feature corpora, crops read with positioned reads, and episodic sampling."""

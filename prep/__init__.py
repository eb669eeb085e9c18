"""Data preparation (used by dataprep.py): VoxCeleb download/extract/convert, the synthetic corpus."""

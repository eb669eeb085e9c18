"""Which audio files the project reads, by suffix: the one home of these lists (no heavy imports, so
training's start-up can use them).

``SOUNDFILE_SUFFIXES``: read by soundfile, in the order a recording's ``<stem>`` is looked for; the wav
index stores a row of this tuple, so it is only ever appended to. ``FFMPEG_SUFFIXES``: decoded by
ffmpeg when it is installed (``feat_extract.audio``).
"""
SOUNDFILE_SUFFIXES = (".wav", ".flac", ".ogg")
FFMPEG_SUFFIXES = frozenset({".m4a", ".aac", ".mp3", ".mp4", ".opus", ".webm"})

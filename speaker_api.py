"""Use a trained meta-SR encoder on your own recordings: one module, three calls.

    from speaker_api import SpeakerEncoder
    encoder = SpeakerEncoder.from_checkpoint(n_folder=0, cp_num=100)   # or path="model.pth"
    a = encoder.embed("enroll.wav")                  # (256,) float32 speaker embedding
    b = encoder.embed(samples, sample_rate=44100)    # numpy array: float in [-1, 1] or int16
    encoder.score(a, b)                              # cosine similarity; paths/arrays work too
    speaker = encoder.enroll(["a1.wav", "a2.wav"])   # several recordings -> one speaker model
    encoder.verify(speaker, "probe.wav", p_target=0.01)   # LLR + Bayes decision (needs a calibration)
    gallery = encoder.enroll_gallery({"alice": ["a1.wav"], "bob": ["b1.wav", "b2.wav"]})
    encoder.identify("probe.wav", gallery, top_k=5)  # [(speaker, cosine), ...] best first

Audio is converted to what the model was trained on (16 kHz mono) and every conversion is reported
as a ``ConversionNote`` warning (``note_handler`` redirects them, e.g. to stderr). Features are the
training recipe (``log_mel_fbank``: 40 log-mel filters, 25 ms / 10 ms, per-utterance mean removed)
over the whole recording; the embedding is the encoder's 256-d output for it, in eval mode -- the
same full-utterance embedding EER_full.py scores, so its saved EER threshold applies. Files are
read in blocks and recordings longer than ``chunk_frames`` (150 s) embedded in exact overlapping
chunks (``evaluation.recordings``), so an hour takes no more memory than a few minutes.
Checkpoints are read weights-only, so a downloaded file cannot run code.

This module is the public name; the code lives in ``evaluation.speaker_encoder``.
"""
from evaluation.speaker_encoder import (CalibrationMismatch, ConversionNote, MIN_SECONDS, ShortRecording,
                                         SpeakerEncoder, Verification, array_to_mono_16k, checkpoint_file, cosine,
                                         default_device, embed, enrolment_embedding, load_samples, score,
                                         short_recording_message)

__all__ = ["CalibrationMismatch", "ConversionNote", "MIN_SECONDS", "ShortRecording", "SpeakerEncoder",
           "Verification", "array_to_mono_16k", "checkpoint_file", "cosine", "default_device", "embed", "enrolment_embedding",
           "load_samples", "score", "short_recording_message"]

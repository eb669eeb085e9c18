"""``embed.py``: one speaker embedding per recording, written as it is computed (a rerun resumes),
with ``index.tsv`` and the requested collection format (see embed.py's help)."""
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common.errors import UserInputError
from common.files import save_npy, write_text
from common.preflight import check_room
from evaluation.audio_inputs import collect_inputs
from evaluation.embedding_files import INDEX_NAME, existing_outputs, key_of, read_index, write_collection
from evaluation.long_recordings import DEFAULT_CHUNK_FRAMES
from evaluation.recordings import embed_recordings
from evaluation.speaker_encoder import SpeakerEncoder, short_recording_message
from feat_extract.audio_stream import BLOCK_SECONDS
from feat_extract.fbank import SAMPLE_RATE

EMBEDDING_BYTES = 4096  # 256 float32 + .npy header, on a 4 KB file-system block


def embed_all(encoder, jobs, out_dir: Path, batch_size: int = 16, chunk_frames: int = DEFAULT_CHUNK_FRAMES,
              block_seconds: float = BLOCK_SECONDS):
    """Embed every job whose ``.npy`` is not there yet; returns (index rows, failures).

    Each embedding is saved (atomically) as soon as it is computed, so an interrupted run resumes
    where it stopped. Bad files are skipped and reported."""
    relatives = [str(key.with_suffix(".npy")) for _, key in jobs]
    done, previous = existing_outputs(out_dir, relatives), read_index(out_dir)
    todo = [i for i, rel in enumerate(relatives) if rel not in done]
    if done:
        print(f"resuming: {len(done)} of {len(jobs)} embeddings already in {out_dir}", file=sys.stderr)
    durations, failures = {}, []
    results = embed_recordings(encoder.model, [jobs[i][0] for i in todo], encoder.device, batch_size, chunk_frames,
                               block_seconds)
    for item in tqdm(results, total=len(todo), desc="embedding", unit="file", file=sys.stderr):
        source, key = jobs[todo[item.index]]
        if item.error:
            failures.append(f"{source} ({item.error})")
            tqdm.write(f"skipped: {item.error}", file=sys.stderr)
            continue
        for note in item.notes:
            tqdm.write(f"note: {source}: {note}", file=sys.stderr)
        if short := short_recording_message(source, round(item.duration_s * SAMPLE_RATE)):
            tqdm.write(f"warning: {short}", file=sys.stderr)
        save_npy(out_dir / relatives[todo[item.index]], item.embedding)
        durations[relatives[todo[item.index]]] = item.duration_s
    rows = [(rel, str(source), durations.get(rel, previous.get(rel, ("", float("nan")))[1]))
            for (source, _), rel in zip(jobs, relatives) if rel in durations or rel in done]
    return rows, failures


def write_index(out_dir: Path, rows) -> Path:
    lines = ["embedding\tsource\tduration_s"] + [f"{emb}\t{src}\t{dur:.3f}" for emb, src, dur in rows]
    write_text(out_dir / INDEX_NAME, "\n".join(lines) + "\n")
    return out_dir / INDEX_NAME


def embed_to_folder(args) -> list:
    """embed.py's work for its parsed flags: every input embedded into ``args.out``; the index rows."""
    jobs = collect_inputs(args.inputs, args.list_file)
    encoder = SpeakerEncoder.from_checkpoint(args.checkpoint, args.n_folder, args.cp_num, device=args.device,
                                             model_dir=args.model_dir)
    out_dir = check_room(args.out, EMBEDDING_BYTES * (len(jobs) + 1), f"{len(jobs)} embeddings")
    rows, failures = embed_all(encoder, jobs, out_dir, args.batch_size, int(args.chunk_seconds * 100),
                               args.block_seconds)
    index = write_index(out_dir, rows)
    written = write_collection(out_dir, [key_of(rel) for rel, _, _ in rows],
                               [np.load(out_dir / rel) for rel, _, _ in rows], args.out_format)
    print(f"wrote {len(rows)} embeddings and {', '.join(map(str, [index, *written]))}", file=sys.stderr)
    if failures:
        shown = "; ".join(failures[:10]) + (f"; ... {len(failures) - 10} more" if len(failures) > 10 else "")
        raise UserInputError(f"{len(failures)} of {len(jobs)} files could not be embedded: {shown}")
    return rows

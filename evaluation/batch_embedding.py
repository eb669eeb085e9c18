"""``embed.py``: one speaker embedding per recording, written as it is computed (a rerun resumes),
with ``index.tsv`` and the requested collection format (see embed.py's help).

An output folder belongs to one model: ``model.json`` records the checkpoint's digest before the
first embedding, and a rerun with another checkpoint is refused (``--overwrite`` re-embeds every
input with the new one). A rerun with some of the inputs adds to the index: nothing embedded
before disappears from ``index.tsv`` or the matrix / ark."""
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common.errors import UserInputError
from common.files import save_npy, write_text
from common.preflight import check_room
from evaluation.audio_inputs import collect_inputs
from evaluation.embedding_files import (FOLDER_NAMES, INDEX_NAME, existing_outputs, key_of, read_index,
                                        read_model_record, write_collection, write_model_record)
from evaluation.long_recordings import DEFAULT_CHUNK_FRAMES
from evaluation.recordings import embed_recordings
from evaluation.speaker_encoder import SpeakerEncoder, short_recording_message
from feat_extract.audio_stream import BLOCK_SECONDS
from feat_extract.fbank import SAMPLE_RATE

EMBEDDING_BYTES = 4096  # 256 float32 + .npy header, on a 4 KB file-system block


def embed_all(encoder, jobs, out_dir: Path, batch_size: int = 16, chunk_frames: int = DEFAULT_CHUNK_FRAMES,
              block_seconds: float = BLOCK_SECONDS, redo: bool = False):
    """Embed every job whose ``.npy`` is not there yet (every job with ``redo``); returns (index
    rows, failures).

    Each embedding is saved (atomically) as soon as it is computed, so an interrupted run resumes
    where it stopped. Bad files are skipped and reported."""
    relatives = [str(key.with_suffix(".npy")) for _, key in jobs]
    done = set() if redo else existing_outputs(out_dir, relatives)
    previous = read_index(out_dir)
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


def check_output_names(jobs) -> None:
    """No recording's embedding may take the name of one of the folder's own files (a top-level
    ``embeddings.wav`` would become ``embeddings.npy``, the ``--out_format matrix`` file)."""
    for source, key in jobs:
        if str(key.with_suffix(".npy")) in FOLDER_NAMES:
            raise UserInputError(f"{source}: its embedding would be named {key.with_suffix('.npy')}, the name of "
                                 f"the output folder's own {key.with_suffix('.npy')}; rename the recording or "
                                 "put it in a sub-folder")


def check_same_model(out_dir: Path, checkpoint, digest: str, overwrite: bool) -> bool:
    """Whether the folder starts afresh (``--overwrite``); refuses embeddings of another (or an
    unrecorded) model unless ``overwrite``. Reads only: nothing is written here."""
    if not out_dir.is_dir():
        return False
    recorded = read_model_record(out_dir).get("checkpoint_digest")
    used = recorded is not None or bool(read_index(out_dir))
    if not used or recorded == digest:
        return False
    if overwrite:
        print(f"note: --overwrite: every input is embedded again with {checkpoint}", file=sys.stderr)
        return True
    whose = (f"another model ({read_model_record(out_dir).get('checkpoint')}, digest {recorded[:12]})"
             if recorded else "a model it did not record")
    raise UserInputError(f"{out_dir} holds embeddings of {whose}, not of {checkpoint} (digest {digest[:12]}); "
                         "embed into another --out, or pass --overwrite to embed every input again with this model")


def merged_rows(out_dir: Path, rows, fresh: bool) -> list:
    """This run's rows added to the earlier index (same model): nothing embedded before disappears."""
    merged = {} if fresh else {rel: (rel, source, duration) for rel, (source, duration) in read_index(out_dir).items()
                               if (out_dir / rel).is_file()}
    merged.update({rel: (rel, source, duration) for rel, source, duration in rows})
    return list(merged.values())


def embed_to_folder(args) -> list:
    """embed.py's work for its parsed flags: every input embedded into ``args.out``; the index rows."""
    from model.checkpoint import checkpoint_digest
    jobs = collect_inputs(args.inputs, args.list_file)
    check_output_names(jobs)
    encoder = SpeakerEncoder.from_checkpoint(args.checkpoint, args.n_folder, args.cp_num, device=args.device,
                                             model_dir=args.model_dir)
    digest = checkpoint_digest(encoder.checkpoint_path)
    fresh = check_same_model(Path(args.out), encoder.checkpoint_path, digest, getattr(args, "overwrite", False))
    out_dir = check_room(args.out, EMBEDDING_BYTES * (len(jobs) + 1), f"{len(jobs)} embeddings")
    if not fresh:   # recorded first, so an interrupted run resumes with the same model only
        write_model_record(out_dir, encoder.checkpoint_path, digest)
    rows, failures = embed_all(encoder, jobs, out_dir, args.batch_size, int(args.chunk_seconds * 100),
                               args.block_seconds, redo=fresh)
    if fresh:       # only once every input is the new model's: an interrupted --overwrite is refused again
        write_model_record(out_dir, encoder.checkpoint_path, digest)
    rows = merged_rows(out_dir, rows, fresh)
    index = write_index(out_dir, rows)
    written = write_collection(out_dir, [key_of(rel) for rel, _, _ in rows],
                               [np.load(out_dir / rel) for rel, _, _ in rows], args.out_format)
    print(f"wrote {len(rows)} embeddings and {', '.join(map(str, [index, *written]))}", file=sys.stderr)
    if failures:
        shown = "; ".join(failures[:10]) + (f"; ... {len(failures) - 10} more" if len(failures) > 10 else "")
        raise UserInputError(f"{len(failures)} of {len(jobs)} files could not be embedded: {shown}")
    return rows

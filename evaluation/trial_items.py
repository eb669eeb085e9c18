"""Trial lists of your own: entries that are audio paths, embedding keys, or VoxCeleb-style keys.

The list is read by ``evaluation.trials.read_trials(path, strict=False)``: a line is ``label enroll
test`` (label 1/0 or target/nontarget) or ``enroll test`` (no labels; then no metrics). Each entry is resolved, in this order, to
1. an embedding in ``--embeddings`` (key = the entry without its suffix, as embed.py names them),
2. an audio file: the entry as a path, relative to ``--audio_root`` when given,
3. stored features of a VoxCeleb-style key (``id10270/x6uYqmx31kE/00001.wav``) under the VoxCeleb1
   feature folders of ``--save_path``, as EER_full.py reads them.
Entries that resolve to nothing are listed before any model is loaded.
"""
import sys
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from common.errors import UserInputError
from evaluation.audio_inputs import path_kind
from evaluation.embedding_files import key_of
from evaluation.trials import feature_relpath, first_names
from feat_extract.fbank import WIN_STEP


@dataclass
class Item:
    kind: str          # "embedding", "audio" or "features"
    value: object      # the vector, or the path


def resolve_items(names, embeddings=None, audio_root=None, feature_roots=()) -> dict:
    """{entry: Item}; raises listing the first few entries that resolve to nothing."""
    resolved, missing = {}, []
    for name in names:
        if embeddings is not None and (key_of(name) in embeddings or name in embeddings):
            resolved[name] = Item("embedding", embeddings.get(name, embeddings.get(key_of(name))))
            continue
        audio = Path(audio_root) / name if audio_root is not None else Path(name)
        features = [Path(root) / feature_relpath(name) for root in feature_roots]
        if path_kind(audio, " (a trial-list entry)") == "file":
            resolved[name] = Item("audio", audio)
        elif any(path_kind(path) == "file" for path in features):
            resolved[name] = Item("features", next(path for path in features if path.is_file()))
        else:
            missing.append(name)
    if missing:
        looked = ["--embeddings" if embeddings is not None else None,
                  f"audio under {audio_root}" if audio_root is not None else "audio paths",
                  f"features under {', '.join(map(str, feature_roots))}" if feature_roots else None]
        raise UserInputError(f"{len(missing)} of {len(resolved) + len(missing)} trial-list entries were "
                             f"found nowhere ({'; '.join(w for w in looked if w)}): {first_names(missing)}")
    return resolved


def embed_items(model, items: dict, device, batch_size: int, chunk_frames: int, durations: dict = None) -> dict:
    """{entry: (256,) embedding}, each distinct audio file or feature file embedded once; the
    recordings' durations in seconds go into ``durations`` when given."""
    from evaluation.embedding import embed_utterances, item_length
    from evaluation.recordings import embed_recordings
    durations = {} if durations is None else durations
    vectors = {name: item.value for name, item in items.items() if item.kind == "embedding"}
    for kind in ("audio", "features"):
        names = [name for name, item in items.items() if item.kind == kind]
        if not names:
            continue
        if kind == "features":
            vectors.update(zip(names, embed_utterances(model, [items[n].value for n in names], device, batch_size)))
            durations.update((n, item_length(items[n].value) * WIN_STEP) for n in names)
            continue
        failures = []
        results = embed_recordings(model, [items[n].value for n in names], device, batch_size, chunk_frames)
        for result in tqdm(results, total=len(names), desc="embedding audio", unit="file", file=sys.stderr):
            if result.error:
                failures.append(result.error)
            vectors[names[result.index]] = result.embedding
            durations[names[result.index]] = result.duration_s
        if failures:
            raise UserInputError(f"{len(failures)} trial-list recordings could not be read: "
                                 + "; ".join(failures[:3]) + ("; ..." if len(failures) > 3 else ""))
    return vectors

"""Feature-store size: disk bytes per second of audio, float32 / float16 .npy vs float64 pickles."""
from bench.report import Result
from bench.synthetic import tree_bytes


def store_results(store) -> list:
    seconds = store.audio_seconds
    baseline = tree_bytes(store.pickle64, "*/*/*.p") / seconds
    results = []
    for dtype in ("float32", "float16"):
        ours = tree_bytes(store.root(dtype), "*/*/*.npy") / seconds
        results.append(Result(f"store_bytes_per_audio_s_{dtype}", ours, "B/s audio", baseline, False,
                              None, "disk bytes incl. headers; baseline: float64 pickles"))
    return results

"""Small timing helpers: medians of repeated wall-clock measurements."""
import statistics
import time


def median_seconds(action, repeats: int) -> float:
    """Median wall time of ``action()`` over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)

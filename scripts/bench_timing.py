"""Wall-clock timing shared by the PyTorch baseline scripts in this folder (imported as a
sibling module: run the scripts as `python scripts/<name>.py`)."""
import statistics
import time


def median_ms(fn, warmup, iters):
    """Median and minimum milliseconds of `iters` calls of `fn` after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), min(times)

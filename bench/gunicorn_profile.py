"""gunicorn config for `bench/run --profile`: cProfile each worker from its start to its exit.

The profile of worker <pid> goes to $BENCH_PROFILE_DIR/gunicorn-<pid>.prof when the worker exits
gracefully (SIGTERM to the master).
"""

from __future__ import annotations

import cProfile
import os
from pathlib import Path
from typing import Any

_profilers: dict[int, cProfile.Profile] = {}


def post_worker_init(worker: Any) -> None:
    profiler = cProfile.Profile()
    _profilers[os.getpid()] = profiler
    profiler.enable()


def worker_exit(server: Any, worker: Any) -> None:
    profiler = _profilers.pop(os.getpid(), None)
    if profiler is None:
        return
    profiler.disable()
    out = Path(os.environ.get("BENCH_PROFILE_DIR", "/tmp"))
    profiler.dump_stats(out / f"gunicorn-{os.getpid()}.prof")

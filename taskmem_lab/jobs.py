"""Resumable jobs: one results folder type and one bounded concurrent map, for every batch command.

Floor 2. `eval`, `score-memory`, `rollout` and `pairs` all do the same thing: open a results
folder made with the same settings (or refuse, naming the setting that differs), skip the keys
that already hold a good row, run the rest with a bounded number of calls in flight, and append
one JSON line per finished item (append + fsync, written by one thread), so a killed job resumes
by running it again. `ResumableDir` is the folder, `bounded_map` the concurrent loop.

Folder layout (file names are chosen by each command, the rules are the same):

- a settings file (`run.json`, `manifest.json`, ...): `schema`, `kind`, the settings, `versions`,
  `created`, `updated` and `status` (`running` while a process works on it);
- a rows file (`results.jsonl`, ...): one row per finished item; a key may appear several times
  (a retried failure, a re-asked question), and the latest good row of each key is the one kept;
- `summary.json`, written at the end of each run.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from tqdm.auto import tqdm

from taskmem_lab.errors import ConfigError, StoreError
from taskmem_lab.schema import SCHEMA_VERSION
from taskmem_lab.store import (
    append_jsonl,
    atomic_write_json,
    cut_torn_tail,
    read_jsonl,
    refuse_links,
    utc_now,
    versions,
)

T = TypeVar("T")
R = TypeVar("R")
Key = Hashable

SUMMARY = "summary.json"
_END: Any = object()  # the end of a map's items


def _status_ok(row: Mapping[str, Any]) -> bool:
    return row.get("status") == "ok"


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def settings_difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    """The first setting (dotted path, e.g. `params.temperature`) whose value differs, or None."""
    for name in new:
        a, b = old.get(name), new.get(name)
        if a == b:
            continue
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            inner = settings_difference(a, b) or settings_difference(b, a)
            if inner is not None:
                return f"{name}.{inner}"
        return name
    return None


def keep_latest(
    rows: Iterable[Mapping[str, Any]],
    key: Callable[[Mapping[str, Any]], Key],
    ok: Callable[[Mapping[str, Any]], bool] = _status_ok,
) -> dict[Key, dict[str, Any]]:
    """The kept row per key, sorted by key: the latest good row, else the latest row (a failure
    never replaces a good row; a later good row replaces an earlier one)."""
    kept: dict[Key, dict[str, Any]] = {}
    for row in rows:
        k = key(row)
        if ok(row) or not ok(kept.get(k, row)):
            kept[k] = dict(row)
    return dict(sorted(kept.items()))


@dataclass
class ResumableDir:
    """A results folder that a killed or finished job is resumed from.

    Attributes:
        path: the folder.
        kind: what it holds (`eval`, `rewards`, `rollouts`, `pairs`), recorded in the settings.
        key: a row's key (e.g. the question id, or (clip, candidate)).
        settings_name: the settings file's name.
        rows_name: the rows file's name.
        ok: whether a row is good (a later good row replaces an earlier one; a failure never
            replaces a good row).
        hint: what the user can do when the settings differ.
    """

    path: Path
    kind: str
    key: Callable[[Mapping[str, Any]], Key]
    settings_name: str = "run.json"
    rows_name: str = "results.jsonl"
    ok: Callable[[Mapping[str, Any]], bool] = _status_ok
    hint: str = "use another output folder, or delete it to start over"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    @property
    def settings_path(self) -> Path:
        return self.path / self.settings_name

    @property
    def rows_path(self) -> Path:
        return self.path / self.rows_name

    def exists(self) -> bool:
        return self.settings_path.is_file()

    def settings(self) -> dict[str, Any]:
        """The stored settings file; `StoreError` when the folder was never opened."""
        if not self.exists():
            raise StoreError(f"no {self.kind} results at {self.path} (no {self.settings_name})")
        try:
            data = json.loads(self.settings_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StoreError(f"{self.settings_path} cannot be read: {exc}") from exc
        except RecursionError:
            raise StoreError(f"{self.settings_path} is nested too deeply to read") from None
        if not isinstance(data, dict):
            raise StoreError(f"{self.settings_path} does not hold a JSON object")
        return data

    def open(self, settings: Mapping[str, Any]) -> ResumableDir:
        """Create the folder, or reopen it for resuming when every setting is the same.

        A different setting is refused with its name; a torn last row (a kill mid-write) is cut.
        """
        if self.path.is_dir():
            refuse_links(self.path, f"{self.kind} results folder")
        if self.exists():
            old = self.settings()
            differs = settings_difference(old, settings)
            if differs is not None:
                raise StoreError(
                    f"{self.path} holds {self.kind} results made with a different "
                    f"{differs!r}; {self.hint}"
                )
            cut_torn_tail(self.rows_path)
            atomic_write_json(
                self.settings_path, {**old, "status": "running", "updated": utc_now()}
            )
            return self
        self.path.mkdir(parents=True, exist_ok=True)
        now = utc_now()
        atomic_write_json(
            self.settings_path,
            {
                "schema": SCHEMA_VERSION,
                "kind": self.kind,
                **settings,
                "versions": versions(),
                "created": now,
                "updated": now,
                "status": "running",
            },
        )
        return self

    def rows(self) -> list[dict[str, Any]]:
        """Every stored row in write order (a key may appear several times)."""
        return read_jsonl(self.rows_path)

    def latest(self) -> dict[Key, dict[str, Any]]:
        """The kept row per key, sorted by key: the latest good row, else the latest row."""
        return keep_latest(self.rows(), self.key, self.ok)

    def good(self) -> dict[Key, dict[str, Any]]:
        """The kept good row per key (what a resumed job skips)."""
        return {k: r for k, r in self.latest().items() if self.ok(r)}

    def append(self, row: Mapping[str, Any]) -> None:
        """Append one row and fsync it (safe to call from several threads)."""
        with self._lock:
            append_jsonl(self.rows_path, dict(row))

    def run(
        self,
        fn: Callable[[T], Mapping[str, Any]],
        items: Iterable[T],
        concurrency: int,
        key: Callable[[T], Key] = id,
        progress: Progress | None = None,
        ahead: int = 0,
    ) -> Iterator[dict[str, Any]]:
        """`bounded_map` for jobs whose `fn` returns the row to store, a failed one included:
        each row is appended as it finishes, then yielded. An exception propagates (a bug)."""
        for outcome in bounded_map(
            fn, items, concurrency, key=key, progress=progress, catch=(), ahead=ahead
        ):
            row = dict(outcome.value or {})
            self.append(row)
            yield row

    def write_summary(
        self, summary: Mapping[str, Any], status: str, name: str = SUMMARY
    ) -> dict[str, Any]:
        """Write the summary (`summary.json` unless `name` says otherwise) and set the settings
        file's `status` (`complete`, `partial`)."""
        data = dict(summary)
        atomic_write_json(self.path / name, data)
        atomic_write_json(
            self.settings_path, {**self.settings(), "status": status, "updated": utc_now()}
        )
        return data


# --------------------------------------------------------------------------- the map


@dataclass
class Outcome(Generic[T, R]):
    """One finished item of `bounded_map`: its value, or the error that stopped it."""

    key: Key
    item: T
    value: R | None = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def message(self) -> str:
        """`key: ErrorType: text` for a failure, "" for a success."""
        return (
            "" if self.error is None else f"{self.key}: {type(self.error).__name__}: {self.error}"
        )


@dataclass
class Progress:
    """The progress bar of a `bounded_map` (tqdm; `enabled=False` shows nothing)."""

    desc: str
    total: int | None = None
    initial: int = 0
    unit: str = "it"
    enabled: bool = True

    def bar(self) -> Any:
        return tqdm(
            total=self.total,
            initial=self.initial,
            desc=self.desc,
            unit=self.unit,
            disable=not self.enabled,
        )


def bounded_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    concurrency: int,
    key: Callable[[T], Key] = id,
    progress: Progress | None = None,
    catch: tuple[type[BaseException], ...] = (Exception,),
    stop_after_failures: int | None = None,
    ahead: int = 0,
) -> Iterator[Outcome[T, R]]:
    """Run `fn` over `items` with at most `concurrency` calls in flight; yield as they finish.

    `items` is read lazily: at most `concurrency + ahead` are held at once, so a generator of
    heavy items (video windows) stays bounded, and with `ahead` > 0 the next items are prepared
    (decoded) while the running ones wait for the model. An exception of a `catch` type becomes a
    failed `Outcome` and the other items go on; any other exception cancels what has not started and
    propagates. After `stop_after_failures` failures in a row no new item is started (a dead
    endpoint ends the job early). Results are yielded in the consumer's thread, in completion
    order; `results_by_key` sorts them.
    """
    if concurrency < 1:
        raise ConfigError(f"parameter 'concurrency': must be >= 1, got {concurrency}")
    if ahead < 0:
        raise ConfigError(f"parameter 'ahead': must be >= 0, got {ahead}")
    bar = (progress or Progress("", enabled=False)).bar()
    pending: dict[Future[R], tuple[Key, T]] = {}
    streak = 0
    source = iter(items)
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="taskmem-job")

    def fill() -> None:
        while len(pending) < concurrency + ahead:
            if stop_after_failures is not None and streak >= stop_after_failures:
                return
            item = next(source, _END)
            if item is _END:
                return
            pending[pool.submit(fn, item)] = (key(item), item)

    try:
        fill()
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                k, item = pending.pop(future)
                error = future.exception()
                if error is not None and not isinstance(error, catch):
                    raise error
                if error is None:
                    streak = 0
                    outcome = Outcome(k, item, value=future.result())
                else:
                    streak += 1
                    outcome = Outcome(k, item, error=error)
                bar.update(1)
                yield outcome
            fill()
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        bar.close()
    pool.shutdown(wait=True)


def results_by_key(outcomes: Iterable[Outcome[T, R]]) -> tuple[dict[Key, R], dict[Key, str]]:
    """Values of the successful outcomes and messages of the failed ones, each sorted by key."""
    values: dict[Key, R] = {}
    failures: dict[Key, str] = {}
    for o in outcomes:
        if o.ok:
            values[o.key] = o.value  # type: ignore[assignment]
        else:
            failures[o.key] = o.message
    return dict(sorted(values.items())), dict(sorted(failures.items()))


__all__ = [
    "Outcome",
    "Progress",
    "ResumableDir",
    "bounded_map",
    "keep_latest",
    "results_by_key",
    "settings_difference",
]

"""Preference pairs read for steer training: what `taskmem adapt` trains on.

Floor 5. `load_pairs(path)` reads a pair file (or a folder holding `pairs.jsonl` /
`pairs.parquet`) in either of two layouts, row by row, into `PreferencePair` records:

- the rows `taskmem pairs` writes: `messages` (the memorizer's exact request, frames as JPEG
  files beside the file), `chosen` and `rejected` entry strings (`{"description": ...}`), and
  `stream` / `clip` (pairs of one clip share a prompt);
- TRL's conversational preference format: `prompt` (a list of `{role, content}` messages, the
  content a string or a list of `{type: text|image}` blocks), `chosen` and `rejected` (lists of
  assistant messages), and an optional `images` column whose images fill the prompt's image
  blocks in order (PIL images, `{bytes, path}` as `datasets` stores them, or file paths relative
  to the pair file).

Each pair's prompt becomes a `Request`, so training tokenizes it exactly as the `hf` backend does
when it generates. A row that cannot be read stops the load with its line (or row) number and
what is wrong; nothing is skipped silently.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskmem_lab.backends.base import ImagePart, Message, Request, Sampling, TextPart
from taskmem_lab.errors import ConfigError, ReplayError

PAIR_FILES = ("pairs.jsonl", "pairs.parquet")


class PairsFileError(ConfigError):
    """A preference-pair file is missing, empty or holds a row in neither known layout."""


@dataclass(frozen=True)
class PreferencePair:
    """One prompt with a preferred and a dispreferred completion.

    Attributes:
        id: the row's id (or `row-<n>`).
        group: pairs with one prompt share a group; held-out pairs are whole groups.
        request: the prompt as the memorizer (or any `ChatModel` caller) sends it.
        chosen: the preferred completion text.
        rejected: the dispreferred completion text.
    """

    id: str
    group: str
    request: Request
    chosen: str
    rejected: str


def pair_file(path: str | Path) -> Path:
    """The file to read: `path` itself, or a folder's `pairs.jsonl` (else `pairs.parquet`)."""
    p = Path(path).expanduser()
    if p.is_dir():
        for name in PAIR_FILES:
            if (p / name).is_file():
                return p / name
        raise PairsFileError(
            f"{p} holds no {' or '.join(PAIR_FILES)}; pass the pair file itself or the folder "
            "`taskmem pairs` wrote"
        )
    if not p.is_file():
        raise PairsFileError(f"pair file not found: {p}")
    return p


def _jsonl_rows(path: Path) -> list[tuple[str, Any]]:
    rows = []
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                rows.append((f"{path}:{n}", json.loads(raw.decode("utf-8"))))
            except (UnicodeDecodeError, ValueError) as exc:
                raise PairsFileError(f"{path}:{n} is not a JSON line: {exc}") from None
    return rows


def _parquet_rows(path: Path) -> list[tuple[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise PairsFileError(
            f"reading {path} needs pyarrow (pip install pyarrow), or pass the pairs.jsonl"
        ) from exc
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise PairsFileError(f"{path} cannot be read as parquet: {exc}") from None
    return [(f"{path} row {n}", row) for n, row in enumerate(table.to_pylist(), 1)]


def _completion(value: Any, where: str, name: str) -> str:
    """The text of a `chosen` / `rejected` value: a string, or assistant messages' text."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        if any(m.get("role", "assistant") != "assistant" for m in value):
            raise PairsFileError(f"{where}: '{name}' must hold assistant messages only")
        text = "".join(_content_text(m.get("content"), where, name) for m in value)
    else:
        raise PairsFileError(
            f"{where}: '{name}' must be a string or a list of assistant messages, "
            f"got {type(value).__name__}"
        )
    if not text.strip():
        raise PairsFileError(f"{where}: '{name}' is empty")
    return text


def _content_text(content: Any, where: str, name: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(b, dict) and b.get("type") == "text" for b in content
    ):
        return "".join(str(b.get("text") or "") for b in content)
    raise PairsFileError(f"{where}: '{name}' content must be text")


def _jpeg(image: Any, root: Path, where: str) -> bytes:
    """JPEG bytes of one `images` entry: a PIL image, `{bytes, path}`, or a path."""
    from PIL import Image, UnidentifiedImageError

    data: bytes | None = None
    if isinstance(image, dict):
        data = image.get("bytes")
        image = image.get("path") if data is None else None
    if isinstance(image, str):
        path = Path(image) if Path(image).is_absolute() else root / image
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise PairsFileError(f"{where}: image {path} cannot be read ({exc.strerror})") from None
    try:
        img = Image.open(io.BytesIO(data)) if data is not None else image
        if not isinstance(img, Image.Image):
            raise PairsFileError(
                f"{where}: an 'images' entry must be a PIL image, a path or {{bytes, path}}"
            )
        if img.format == "JPEG" and data is not None:
            return data
        buf = io.BytesIO()
        img.convert("RGB").save(buf, format="JPEG", quality=95)
        return buf.getvalue()
    except (UnidentifiedImageError, OSError) as exc:
        raise PairsFileError(f"{where}: an 'images' entry is not an image ({exc})") from None


def _trl_request(row: dict[str, Any], root: Path, where: str) -> Request:
    prompt, images = row["prompt"], list(row.get("images") or [])
    if not isinstance(prompt, list) or not prompt:
        raise PairsFileError(
            f"{where}: 'prompt' must be a non-empty list of {{role, content}} messages "
            "(TRL's conversational format)"
        )
    used = 0
    messages = []
    for m in prompt:
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise PairsFileError(f"{where}: every prompt message needs 'role' and 'content'")
        content = m["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list):
            raise PairsFileError(f"{where}: a message's content must be a string or a list")
        parts: list[Any] = []
        for b in blocks:
            kind = b.get("type") if isinstance(b, dict) else None
            if kind == "text":
                parts.append(TextPart(str(b.get("text") or "")))
            elif kind == "image":
                if used >= len(images):
                    raise PairsFileError(
                        f"{where}: the prompt has more image blocks than the {len(images)} "
                        "entries of 'images'"
                    )
                parts.append(ImagePart(_jpeg(images[used], root, where)))
                used += 1
            else:
                raise PairsFileError(f"{where}: unknown content block {b!r:.80}")
        messages.append(Message(str(m["role"]), tuple(parts)))
    if used != len(images):
        raise PairsFileError(
            f"{where}: 'images' has {len(images)} entries but the prompt has {used} image blocks"
        )
    return Request(tuple(messages), Sampling(temperature=0.0, max_tokens=16), "adapt")


def _taskmem_request(row: dict[str, Any], root: Path, where: str) -> Request:
    from taskmem_lab.training.export import request_from_record

    try:
        return request_from_record(row, root)
    except ReplayError as exc:
        raise PairsFileError(f"{where}: {exc}") from None
    except OSError as exc:
        raise PairsFileError(
            f"{where}: a frame file cannot be read ({exc.strerror}: {exc.filename}); pair "
            "files carry their media beside them, keep the folder together"
        ) from None
    except (KeyError, TypeError, ValueError) as exc:
        raise PairsFileError(
            f"{where}: malformed 'messages' ({type(exc).__name__}: {exc})"
        ) from None


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def pair_from_row(row: Any, root: Path, where: str, n: int) -> PreferencePair:
    """One row of either layout as a `PreferencePair` (`PairsFileError` naming the row)."""
    if not isinstance(row, dict):
        raise PairsFileError(f"{where}: a row must be a JSON object, got {type(row).__name__}")
    missing = [k for k in ("chosen", "rejected") if k not in row]
    if missing:
        raise PairsFileError(f"{where}: no {' and '.join(map(repr, missing))} column")
    if "messages" in row:  # written by `taskmem pairs`
        request = _taskmem_request(row, root, where)
        group = f"{row.get('stream')}*{row.get('clip')}"
    elif "prompt" in row:
        request = _trl_request(row, root, where)
        group = _digest(row["prompt"])
    else:
        raise PairsFileError(
            f"{where}: neither a `taskmem pairs` row ('messages') nor TRL's conversational "
            "format ('prompt')"
        )
    chosen = _completion(row["chosen"], where, "chosen")
    rejected = _completion(row["rejected"], where, "rejected")
    if chosen == rejected:
        raise PairsFileError(f"{where}: 'chosen' and 'rejected' are the same text")
    return PreferencePair(str(row.get("id") or f"row-{n}"), group, request, chosen, rejected)


def load_pairs(path: str | Path) -> list[PreferencePair]:
    """Every pair of a pair file (or of the folder `taskmem pairs` wrote)."""
    file = pair_file(path)
    rows = _parquet_rows(file) if file.suffix == ".parquet" else _jsonl_rows(file)
    if not rows:
        raise PairsFileError(f"{file} holds no pairs")
    pairs = [pair_from_row(row, file.parent, where, n) for n, (where, row) in enumerate(rows, 1)]
    ids = [p.id for p in pairs]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise PairsFileError(f"{file}: pair id {dup!r} appears more than once")
    return pairs


def split_pairs(
    pairs: Sequence[PreferencePair], holdout: float, seed: int
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(train, held out): a `holdout` share of the prompt groups, picked by `seed`, held out.

    Whole groups go one way, so no held-out prompt is seen in training. With `holdout > 0` at
    least one group is held out and at least one trained on.
    """
    groups = sorted({p.group for p in pairs})
    if holdout <= 0:
        return list(pairs), []
    if len(groups) < 2:
        raise PairsFileError(
            f"holding pairs out needs pairs of at least two prompts ({len(groups)} found); "
            "pass --holdout 0 to train on all of them"
        )
    count = min(len(groups) - 1, max(1, round(holdout * len(groups))))
    held = set(random.Random(f"{seed}:holdout").sample(groups, count))
    return [p for p in pairs if p.group not in held], [p for p in pairs if p.group in held]


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    """The training pairs of step `step` (0-based): consecutive slices of per-epoch shuffles.

    A function of (seed, step) only, so a resumed run draws the batches it would have drawn.
    """
    size = min(batch_size, n)
    out: list[int] = []
    position = step * size
    while len(out) < size:
        epoch, offset = divmod(position, n)
        order = random.Random(f"{seed}:epoch:{epoch}").sample(range(n), n)
        take = order[offset : offset + size - len(out)]
        out.extend(take)
        position += len(take)
    return out


def pairs_digest(pairs: Iterable[PreferencePair]) -> str:
    """A hash of the pairs' ids, prompts and completions (the settings a resume must match)."""
    h = hashlib.sha256()
    for p in pairs:
        h.update(p.id.encode())
        h.update(p.request.fingerprint("adapt").encode())
        h.update(p.chosen.encode() + b"\0" + p.rejected.encode())
    return h.hexdigest()[:16]

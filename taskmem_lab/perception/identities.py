"""The per-stream identity registry: characters, their face and voice banks, global ids.

Floor 3 (perception). One registry lives as long as a stream. Each clip's face clusters (from
`perception.faces`) are matched to characters by the mean cosine similarity between the
cluster's embeddings and a character's stored face embeddings; a cluster joins the best
character at or above the threshold, except that two clusters seen in the same frame never join
one character (the second tries its next-best character), and otherwise becomes a new character
with the next global id `[face_N]`. Voices (`perception.voices`) use the same characters: a voice
matches a character's voice bank, is banked with a face that was seen speaking, or starts a
character known only by voice.

Banks are capped (15 faces, 25 voices); a bank that grows past its cap is pruned to its least
redundant 10 / 20 embeddings (the ones least similar to the rest are kept). Every character owns
its arrays. `save(directory)` writes `identities.json` with one `.npy` file per bank (no pickle)
and one representative face crop (JPEG) per character for galleries.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from taskmem_lab.errors import StoreError
from taskmem_lab.face_ids import GLOBAL_ID
from taskmem_lab.media.video import Frame
from taskmem_lab.perception.params import IdentityParams
from taskmem_lab.perception.records import FaceDetection, unit_rows
from taskmem_lab.store import IDENTITIES, atomic_write_bytes, atomic_write_json

SCHEMA = 1
BANKS_DIR = "identities"
GALLERY_DIR = "gallery"
_TIME_KEY = 3  # decimals: detections within 1 ms are on the same sampled frame


def _empty_bank() -> np.ndarray:
    return np.zeros((0, 0), dtype=np.float32)


@dataclass
class Character:
    """One person (or voice) of the stream, with banks of unit embeddings."""

    global_id: str
    faces: np.ndarray = field(default_factory=_empty_bank)
    voices: np.ndarray = field(default_factory=_empty_bank)
    crop: bytes | None = None  # JPEG of the best face seen so far
    crop_quality: float = -math.inf
    first_seen: float | None = None
    last_seen: float | None = None
    clips: int = 0  # `assign` calls in which the face was seen

    def seen(self, t0: float, t1: float) -> None:
        self.first_seen = t0 if self.first_seen is None else min(self.first_seen, t0)
        self.last_seen = t1 if self.last_seen is None else max(self.last_seen, t1)


def prune_bank(bank: np.ndarray, keep: int) -> np.ndarray:
    """The `keep` least redundant rows of a unit-row bank, in their original order.

    Repeatedly drops the row whose nearest neighbour is the most similar (of a near-duplicate
    pair, the one more similar to all the others; then the older one), so what remains covers
    the most varied appearances.
    """
    n = len(bank)
    if n <= keep:
        return bank
    sim = bank.astype(np.float64) @ bank.astype(np.float64).T
    np.fill_diagonal(sim, -np.inf)
    alive = np.ones(n, dtype=bool)
    for _ in range(n - keep):
        idx = np.flatnonzero(alive)
        sub = sim[np.ix_(idx, idx)]
        nearest = sub.max(axis=1)
        tied = np.flatnonzero(nearest >= nearest.max() - 1e-9)
        total = np.where(np.isfinite(sub), sub, 0.0).sum(axis=1)
        pick = max(tied, key=lambda j: (total[j], -idx[j]))
        alive[idx[pick]] = False
    return bank[alive]


def _grow(bank: np.ndarray, new: np.ndarray, cap: int, keep: int, what: str) -> np.ndarray:
    new = unit_rows(new)
    if bank.size == 0:
        merged = new
    elif bank.shape[1] != new.shape[1]:
        raise ValueError(
            f"{what} embedding of length {new.shape[1]} for a bank of length {bank.shape[1]}"
        )
    else:
        merged = np.concatenate([bank, new])
    return prune_bank(merged, keep) if len(merged) > cap else merged


def _mean_similarity(a: np.ndarray, bank: np.ndarray) -> float:
    if bank.size == 0 or a.size == 0 or a.shape[1] != bank.shape[1]:
        return -math.inf
    return float((a @ bank.T).mean())


# Characters first seen by face are `[face_N]`; characters known only by voice are `[voice_N]`,
# a namespace of their own, so one label never names two people in two places.
CHARACTER_ID = re.compile(r"\[(face|voice)_(\d+)\]")


def _parts(global_id: str) -> tuple[str, int]:
    m = CHARACTER_ID.fullmatch(global_id)
    if m is None:
        raise StoreError(f"not a global id: {global_id!r}")
    return m.group(1), int(m.group(2))


def _number(global_id: str) -> int:
    m = GLOBAL_ID.fullmatch(global_id)
    if m is None:
        raise StoreError(f"not a face id: {global_id!r}")
    return int(m.group(1))


def _order(global_id: str) -> tuple[int, int]:
    kind, n = _parts(global_id)
    return (0 if kind == "face" else 1, n)


def _stem(global_id: str) -> str:
    kind, n = _parts(global_id)
    return f"{kind}_{n}"


@dataclass
class _Cluster:
    label: int
    dets: list[FaceDetection]
    embeddings: np.ndarray
    times: set[float]
    first: tuple[float, float]


class IdentityRegistry:
    """Characters of one stream and the rules that give faces and voices their global ids."""

    def __init__(self, params: IdentityParams | None = None) -> None:
        self.params = params or IdentityParams()
        self.characters: dict[str, Character] = {}
        self._next = 1
        self._next_voice = 1
        # voice id -> {"to": face id, "how": ..., "evidence_s": ...}: a voice-only character
        # later linked to a face; its label keeps meaning that face from then on.
        self.links: dict[str, dict[str, Any]] = {}
        # (voice id, face id) -> seconds the voice spoke while that face alone was visible
        self.evidence: dict[tuple[str, str], float] = {}

    def __len__(self) -> int:
        return len(self.characters)

    def __contains__(self, global_id: object) -> bool:
        return global_id in self.characters

    def _new_character(self) -> Character:
        gid = f"[face_{self._next}]"
        self._next += 1
        char = Character(gid)
        self.characters[gid] = char
        return char

    # ------------------------------------------------------------------ faces

    def _clusters(self, dets: Sequence[FaceDetection]) -> list[_Cluster]:
        groups: dict[int, list[FaceDetection]] = {}
        for d in dets:
            if d.cluster >= 0:
                groups.setdefault(d.cluster, []).append(d)
        out = []
        for label, members in groups.items():
            embedded = [d.embedding for d in members if d.embedding.size]
            if not embedded:
                continue  # nothing to match on; these detections keep no identity
            out.append(
                _Cluster(
                    label,
                    members,
                    unit_rows(np.stack(embedded)),
                    {round(d.time, _TIME_KEY) for d in members},
                    min((d.time, d.box[0]) for d in members),
                )
            )
        out.sort(key=lambda c: c.first)
        return out

    def assign(
        self, dets: Sequence[FaceDetection], frames: Sequence[Frame] | None = None
    ) -> list[str]:
        """Give one clip's face clusters global ids; sets `.identity` on `dets`.

        Clusters are matched to existing characters best pair first (mean cosine similarity
        at or above the face threshold); a cluster whose best character is already taken by a
        cluster seen in one of its frames tries its next-best character. Unmatched clusters,
        in order of first appearance, may join a character created earlier in this call
        (same rules) or become new characters. Every matched cluster's embeddings go into its
        character's bank. With `frames` (the sampled frames the detections came from), each
        character keeps a crop of its best face. Detections without a cluster (-1) or without
        any embedding in their cluster get no identity.

        Returns the global ids in order of first appearance in the clip.
        """
        clusters = self._clusters(dets)
        threshold = self.params.face_min_similarity
        existing = [c for c in self.characters.values() if c.faces.size]
        owner: dict[int, str] = {}  # cluster label -> global id
        claimed: dict[str, set[float]] = {}  # global id -> frame times of its clusters

        def free(gid: str, cluster: _Cluster) -> bool:
            return not (claimed.get(gid, set()) & cluster.times)

        def take(gid: str, cluster: _Cluster) -> None:
            owner[cluster.label] = gid
            claimed.setdefault(gid, set()).update(cluster.times)

        pairs = []
        for ci, cl in enumerate(clusters):
            for ch in existing:
                sim = _mean_similarity(cl.embeddings, ch.faces)
                if sim >= threshold:
                    pairs.append((-sim, ci, _number(ch.global_id)))
        pairs.sort()
        for _, ci, num in pairs:
            cl = clusters[ci]
            gid = f"[face_{num}]"
            if cl.label not in owner and free(gid, cl):
                take(gid, cl)
        created: list[Character] = []
        banked: set[int] = set()
        for cl in clusters:
            if cl.label in owner:
                continue
            scored = sorted(
                ((_mean_similarity(cl.embeddings, ch.faces), ch.global_id) for ch in created),
                key=lambda x: (-x[0], _number(x[1])),
            )
            joined = next((g for s, g in scored if s >= threshold and free(g, cl)), None)
            if joined is None:
                char = self._new_character()
                created.append(char)
                joined = char.global_id
            gid = joined
            take(gid, cl)
            # Bank now, so later clusters of this call can match the new character.
            self._bank_faces(self.characters[gid], cl)
            banked.add(cl.label)
        crops = {round(f.time, _TIME_KEY): f for f in frames} if frames is not None else {}
        seen_in_clip: set[str] = set()
        for cl in clusters:
            gid = owner[cl.label]
            char = self.characters[gid]
            if cl.label not in banked:
                self._bank_faces(char, cl)
            for d in cl.dets:
                d.identity = gid
            char.seen(min(cl.times), max(cl.times))
            if gid not in seen_in_clip:
                char.clips += 1
                seen_in_clip.add(gid)
            if crops:
                self._update_crop(char, cl, crops)
        order = sorted(
            ((d.time, d.box[0]), d.identity) for d in dets if d.identity in self.characters
        )
        return list(dict.fromkeys(gid for _, gid in order))

    def _bank_faces(self, char: Character, cl: _Cluster) -> None:
        p = self.params
        char.faces = _grow(char.faces, cl.embeddings, p.face_cap, p.face_keep, "face")

    def _update_crop(self, char: Character, cl: _Cluster, frames: dict[float, Frame]) -> None:
        candidates = [d for d in cl.dets if round(d.time, _TIME_KEY) in frames]
        if not candidates:
            return
        best = max(candidates, key=lambda d: (d.quality, d.score, -d.time))
        if best.quality <= char.crop_quality:
            return
        image = frames[round(best.time, _TIME_KEY)].image
        char.crop = face_crop_jpeg(image, best.box, self.params.crop_side)
        char.crop_quality = float(best.quality)

    # ------------------------------------------------------------------ voices

    def match_voice(self, embedding: np.ndarray) -> str | None:
        """The character whose voice bank has the highest mean cosine similarity to
        `embedding` (one row or several of one speaker), if it reaches the voice threshold
        (a voice linked to a face resolves to the face); else None."""
        e = unit_rows(embedding)
        best: tuple[tuple[float, bool, int], str] | None = None
        for char in self.characters.values():
            sim = _mean_similarity(e, char.voices)
            if sim >= self.params.voice_threshold:
                kind, n = _parts(char.global_id)
                key = (sim, kind == "face", -n)
                if best is None or key > best[0]:
                    best = (key, char.global_id)
        return None if best is None else self.resolve(best[1])

    def add_voice(self, global_id: str, embedding: np.ndarray) -> None:
        """Bank a voice embedding with an existing character (pruned past the cap)."""
        char = self.characters.get(global_id)
        if char is None:
            raise ValueError(f"no character {global_id} in the registry")
        p = self.params
        char.voices = _grow(char.voices, embedding, p.voice_cap, p.voice_keep, "voice")

    def new_voice_character(self, embedding: np.ndarray) -> str:
        """A new character known by voice only (an off-screen speaker), `[voice_N]`; returns
        its id. `embedding` may hold one voice or several rows (a cluster of one speaker)."""
        gid = f"[voice_{self._next_voice}]"
        self._next_voice += 1
        self.characters[gid] = Character(gid)
        self.add_voice(gid, embedding)
        return gid

    def resolve(self, global_id: str) -> str:
        """The id a label stands for now: a voice linked to a face resolves to the face."""
        seen = set()
        while global_id in self.links and global_id not in seen:
            seen.add(global_id)
            global_id = str(self.links[global_id]["to"])
        return global_id

    def has_voice(self, global_id: str) -> bool:
        """Whether the character has a voice bank (its own voice, or one linked to it)."""
        character = self.characters.get(global_id)
        return character is not None and bool(character.voices.size)

    def add_evidence(self, voice_id: str, face_id: str, seconds: float) -> float:
        """Count `seconds` of `voice_id` speaking while `face_id` alone was visible; returns
        the total for the pair."""
        key = (voice_id, face_id)
        self.evidence[key] = self.evidence.get(key, 0.0) + seconds
        return self.evidence[key]

    def evidence_share(self, voice_id: str, face_id: str) -> float:
        """The pair's share of all seconds `voice_id` spoke with a face alone in view."""
        total = sum(v for (voice, _), v in self.evidence.items() if voice == voice_id)
        return self.evidence.get((voice_id, face_id), 0.0) / total if total > 0 else 0.0

    def link_voice(self, voice_id: str, face_id: str, how: str) -> None:
        """Link a voice-only character to a face character: its voices join the face's bank
        and its label resolves to the face from now on (records already written keep it)."""
        if not voice_id.startswith("[voice_") or voice_id in self.links:
            return
        voice = self.characters.get(voice_id)
        if voice is None or face_id not in self.characters:
            raise ValueError(f"cannot link {voice_id} to {face_id}: unknown character")
        if voice.voices.size:
            self.add_voice(face_id, voice.voices)
        self.links[voice_id] = {
            "to": face_id,
            "how": how,
            "evidence_s": round(self.evidence.get((voice_id, face_id), 0.0), 2),
        }
        voice.voices = _empty_bank()  # the face's bank matches this voice from now on

    # ------------------------------------------------------------------ persistence

    def to_json(self) -> dict[str, Any]:
        chars = {}
        for gid, c in sorted(self.characters.items(), key=lambda kv: _order(kv[0])):
            stem = _stem(gid)
            chars[gid] = {
                "faces": f"{BANKS_DIR}/{stem}.faces.npy" if c.faces.size else None,
                "voices": f"{BANKS_DIR}/{stem}.voices.npy" if c.voices.size else None,
                "crop": f"{GALLERY_DIR}/{stem}.jpg" if c.crop is not None else None,
                "crop_quality": None if c.crop is None else c.crop_quality,
                "first_seen": c.first_seen,
                "last_seen": c.last_seen,
                "clips": c.clips,
                "n_faces": int(len(c.faces)) if c.faces.size else 0,
                "n_voices": int(len(c.voices)) if c.voices.size else 0,
            }
        return {
            "schema": SCHEMA,
            "params": self.params.to_json(),
            "next_id": self._next,
            "next_voice_id": self._next_voice,
            "links": self.links,
            "evidence": [[v, f, round(s, 3)] for (v, f), s in sorted(self.evidence.items())],
            "characters": chars,
        }

    def save(self, directory: str | Path) -> Path:
        """Write `identities.json`, the banks (`.npy`) and the crops (JPEG) under `directory`.

        Every file is written to a temporary name and renamed, the JSON last, so a reader sees
        the previous or the new registry.
        """
        root = Path(directory)
        (root / BANKS_DIR).mkdir(parents=True, exist_ok=True)
        (root / GALLERY_DIR).mkdir(parents=True, exist_ok=True)
        data = self.to_json()
        for gid, entry in data["characters"].items():
            c = self.characters[gid]
            if entry["faces"]:
                _atomic_npy(root / entry["faces"], c.faces)
            if entry["voices"]:
                _atomic_npy(root / entry["voices"], c.voices)
            if entry["crop"]:
                atomic_write_bytes(root / entry["crop"], c.crop or b"")
        path = root / IDENTITIES
        atomic_write_json(path, data)
        return path

    @classmethod
    def load(cls, directory: str | Path, params: IdentityParams | None = None) -> IdentityRegistry:
        """The registry saved under `directory` (an empty one if it holds none yet).

        `params`, when given, replaces the saved parameters (thresholds of a new experiment).
        """
        root = Path(directory)
        path = root / IDENTITIES
        if not path.exists():
            return cls(params)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:
            raise StoreError(f"cannot read the identity registry {path}: {exc!r:.200}") from None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise StoreError(f"{path}: unknown identity registry schema {data.get('schema')!r}")
        saved = data.get("params") or {}
        try:
            stored_params = IdentityParams(**saved)
        except TypeError as exc:
            raise StoreError(f"{path}: bad registry parameters: {exc}") from exc
        reg = cls(params or stored_params)
        chars = data.get("characters") or {}
        for gid, entry in chars.items():
            char = Character(gid)
            _parts(gid)
            for key in ("faces", "voices"):
                rel = entry.get(key)
                if rel:
                    bank = _load_npy(root / rel)
                    setattr(char, key, bank)
            rel = entry.get("crop")
            if rel:
                crop_path = root / rel
                if not crop_path.is_file():
                    raise StoreError(f"{path}: crop {crop_path} is missing")
                char.crop = crop_path.read_bytes()
                char.crop_quality = float(entry.get("crop_quality") or -math.inf)
            char.first_seen = entry.get("first_seen")
            char.last_seen = entry.get("last_seen")
            char.clips = int(entry.get("clips", 0))
            reg.characters[gid] = char
        faces = [n for kind, n in map(_parts, reg.characters) if kind == "face"]
        voices = [n for kind, n in map(_parts, reg.characters) if kind == "voice"]
        reg._next = max([int(data.get("next_id", 1)), *(n + 1 for n in faces)])
        reg._next_voice = max([int(data.get("next_voice_id", 1)), *(n + 1 for n in voices)])
        links = data.get("links") or {}
        if not isinstance(links, dict):
            raise StoreError(f"{path}: 'links' is not an object")
        reg.links = {str(k): dict(v) for k, v in links.items()}
        for item in data.get("evidence") or []:
            reg.evidence[(str(item[0]), str(item[1]))] = float(item[2])
        return reg


def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise StoreError(f"embedding bank {path} is missing")
    try:
        bank = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read embedding bank {path}: {exc}") from exc
    if bank.ndim != 2 or not np.issubdtype(bank.dtype, np.floating):
        raise StoreError(f"embedding bank {path} is not a 2-d float array")
    return bank.astype(np.float32)


def _atomic_npy(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def face_crop_jpeg(
    image: np.ndarray, box: Sequence[float], max_side: int = 160, margin: float = 0.25
) -> bytes:
    """JPEG of a face (normalized `box`) with `margin` of its size around it."""
    from PIL import Image

    h, w = image.shape[:2]
    x1, y1, x2, y2 = box[0] * w, box[1] * h, box[2] * w, box[3] * h
    mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    left, top = max(0, int(x1 - mx)), max(0, int(y1 - my))
    right, bottom = min(w, int(math.ceil(x2 + mx))), min(h, int(math.ceil(y2 + my)))
    if right <= left or bottom <= top:
        raise ValueError(f"empty face box {tuple(box)}")
    crop = Image.fromarray(image[top:bottom, left:right])
    crop.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    crop.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def gallery(directory: str | Path) -> list[tuple[str, Path]]:
    """(global id, crop path) of every character with a face crop saved under `directory`,
    in id order."""
    path = Path(directory) / IDENTITIES
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise StoreError(f"cannot read the identity registry {path}: {exc!r:.200}") from None
    out = []
    for gid, entry in (data.get("characters") or {}).items():
        rel = entry.get("crop")
        if rel:
            out.append((gid, Path(directory) / rel))
    return sorted(out, key=lambda kv: _order(kv[0]))

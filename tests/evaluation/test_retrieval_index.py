"""The retrieval index is built once per memory and stored beside it, keyed by entry hashes:
a grown memory embeds only its new entries, stale ones are dropped, nothing is pickled."""

import json

import numpy as np

from taskmem_lab.evaluation.retrieval import Retriever, entry_hash, index_folder
from taskmem_lab.memory import Entry, Memory


class fake_encoder:  # noqa: N801 - a test double, named as the project names them
    """Bag-of-words vectors over a fixed vocabulary; remembers every text it embedded."""

    VOCAB = ("jake", "kitchen", "fridge", "flowers", "lunch", "guitar", "boxes", "evening")

    def __init__(self) -> None:
        self.seen: list[str] = []

    def encode(self, texts, **_: object) -> np.ndarray:
        self.seen += list(texts)
        rows = []
        for t in texts:
            words = t.lower().replace(".", " ").replace("?", " ").split()
            v = np.array([words.count(w) for w in self.VOCAB], dtype=np.float32) + 1e-3
            rows.append(v / np.linalg.norm(v))
        return np.stack(rows)


TEXTS = [
    "Jake walks into the kitchen.",
    "Jake puts strawberries in the fridge.",
    "Lucia trims flowers next to the vase.",
    "Everyone eats lunch at the long table.",
]


def _memory(texts) -> Memory:
    return Memory([Entry(i, i * 10.0, i * 10.0 + 10, t) for i, t in enumerate(texts)])


def test_a_grown_memory_embeds_only_its_new_entries(tmp_path):
    (tmp_path / "run").mkdir()
    folder = index_folder(tmp_path / "run")
    assert folder == tmp_path / "run" / "retrieval"
    first = fake_encoder()
    stats = Retriever("fake", encoder=first).index("m", _memory(TEXTS), folder)
    assert (stats.embedded, stats.reused, stats.stored) == (4, 0, True)
    assert first.seen == sorted(first.seen, key=lambda t: entry_hash(Entry(0, 0, 1, t)))
    # a new process, the memory two clips longer: only those two are embedded
    grown = TEXTS + ["Jake plays the guitar in the evening.", "Katrina carries boxes."]
    second = fake_encoder()
    retriever = Retriever("fake", encoder=second)
    stats = retriever.index("m", _memory(grown), folder)
    assert (stats.embedded, stats.reused, stats.dropped) == (2, 4, 0)
    assert sorted(second.seen) == sorted(grown[4:])
    # the stored vectors are the ones a fresh embedding gives, and search uses them
    (found,) = retriever.search("m", "guitar evening", until=None, k=1)
    assert found.text == grown[4]
    # reopened unchanged: nothing embedded, nothing written
    meta = next(folder.glob("*.json"))
    before = meta.read_text()
    third = fake_encoder()
    stats = Retriever("fake", encoder=third).index("m", _memory(grown), folder)
    assert third.seen == [] and stats.reused == 6 and meta.read_text() == before


def test_stale_entries_are_dropped_and_files_are_plain(tmp_path):
    folder = tmp_path / "idx"
    Retriever("fake", encoder=fake_encoder()).index("m", _memory(TEXTS), folder)
    # a re-written memory: the second entry's text changed, the last one is gone
    edited = [TEXTS[0], "Jake opens the fridge again.", TEXTS[2]]
    enc = fake_encoder()
    stats = Retriever("fake", encoder=enc).index("m", _memory(edited), folder)
    assert enc.seen == ["Jake opens the fridge again."]
    assert (stats.embedded, stats.reused, stats.dropped) == (1, 2, 2)
    (meta_path,) = folder.glob("*.json")
    meta = json.loads(meta_path.read_text())
    assert sorted(meta["hashes"]) == sorted(entry_hash(e) for e in _memory(edited).entries)
    (matrix,) = folder.glob("*.npy")  # the old matrix is gone
    assert meta["vectors"] == matrix.name
    vectors = np.load(matrix, allow_pickle=False)  # a plain array: no pickle can load code
    assert vectors.shape == (3, len(fake_encoder.VOCAB)) and vectors.dtype == np.float32


def test_a_torn_or_hostile_index_is_rebuilt_not_trusted(tmp_path):
    folder = tmp_path / "idx"
    Retriever("fake", encoder=fake_encoder()).index("m", _memory(TEXTS), folder)
    (meta_path,) = folder.glob("*.json")
    meta = json.loads(meta_path.read_text())
    for bad in ({**meta, "hashes": meta["hashes"][:2]}, {**meta, "vectors": "../../etc.npy"}):
        meta_path.write_text(json.dumps(bad))
        enc = fake_encoder()
        stats = Retriever("fake", encoder=enc).index("m", _memory(TEXTS), folder)
        assert stats.embedded == 4 and sorted(enc.seen) == sorted(TEXTS)
    # another model's index is not this model's
    enc = fake_encoder()
    assert Retriever("other", encoder=enc).index("m", _memory(TEXTS), folder).embedded == 4


def test_search_masks_later_entries_and_prepared_queries_skip_the_encoder(tmp_path):
    enc = fake_encoder()
    retriever = Retriever("fake", encoder=enc)
    retriever.index("m", _memory(TEXTS), None)
    retriever.prepare(["fridge", "kitchen"])
    seen = len(enc.seen)
    assert [e.clip for e in retriever.search("m", "fridge", until=40.0, k=2)] == [0, 1]
    assert [e.clip for e in retriever.search("m", "fridge", until=15.0, k=3)] == [0]
    assert retriever.search("m", "kitchen", until=5.0, k=3) == []  # nothing finished yet
    assert len(enc.seen) == seen  # prepared: not encoded again
    retriever.search("m", "lunch", until=None, k=1)
    assert enc.seen[-1] == "lunch"


def test_a_folder_that_cannot_be_written_keeps_the_index_in_memory(tmp_path):
    blocker = tmp_path / "memory.jsonl"
    blocker.write_text("")  # a file where the folder would go: mkdir fails, as on read-only media
    enc = fake_encoder()
    retriever = Retriever("fake", encoder=enc)
    stats = retriever.index("m", _memory(TEXTS), blocker / "idx")
    assert stats.embedded == 4 and not stats.stored
    assert [e.clip for e in retriever.search("m", "fridge", until=None, k=1)] == [1]

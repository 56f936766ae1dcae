"""The identity registry: matching rules, the same-frame rule, banks, voices, persistence."""

from __future__ import annotations

import json

import numpy as np
import pytest

from taskmem_lab.errors import ConfigError, StoreError
from taskmem_lab.media.video import Frame
from taskmem_lab.perception.identities import (
    Character,
    IdentityRegistry,
    gallery,
    prune_bank,
)
from taskmem_lab.perception.params import FACE_MATCH_THRESHOLD, IdentityParams
from taskmem_lab.perception.records import FaceDetection

DIM = 64
ARC = IdentityParams(face_backend="insightface")  # threshold 0.3, as in the design


def unit(v) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def basis(k: int) -> np.ndarray:
    e = np.zeros(DIM, np.float32)
    e[k] = 1
    return e


def mix(a: np.ndarray, b: np.ndarray, cos: float) -> np.ndarray:
    """A unit vector with cosine `cos` to unit `a`, in the plane of a and orthogonal b."""
    return unit(cos * a + np.sqrt(1 - cos**2) * b)


def cluster(label: int, emb: np.ndarray, times, x: float = 0.1, quality=0.9):
    return [
        FaceDetection(t, (x, 0.1, x + 0.2, 0.4), 0.9, quality, emb, track=label, cluster=label)
        for t in times
    ]


T0 = [0.0, 0.1, 0.2]
T1 = [0.5, 0.6, 0.7]


# --------------------------------------------------------------------------- params


def test_thresholds_and_caps_follow_the_design():
    p = ARC
    assert (p.face_min_similarity, p.voice_threshold) == (0.3, 0.7)
    assert (p.face_cap, p.face_keep, p.voice_cap, p.voice_keep) == (15, 10, 25, 20)
    assert IdentityParams().face_min_similarity == FACE_MATCH_THRESHOLD["dlib"]
    assert IdentityParams(face_threshold=0.5).face_min_similarity == 0.5


@pytest.mark.parametrize(
    "field,value",
    [("face_backend", "opencv"), ("face_threshold", 2.0), ("face_keep", 16), ("voice_keep", 0)],
)
def test_bad_parameters_name_the_field(field, value):
    with pytest.raises(ConfigError, match=f"'{field}'"):
        IdentityParams(**{field: value})


def test_characters_own_their_banks():
    a, b = Character("[face_1]"), Character("[face_2]")
    assert a.faces is not b.faces and a.voices is not b.voices
    reg = IdentityRegistry(ARC)
    reg.new_voice_character(basis(0))
    reg.new_voice_character(basis(1))
    banks = [c.voices for c in reg.characters.values()]
    assert banks[0] is not banks[1] and not np.shares_memory(banks[0], banks[1])
    with pytest.raises(AttributeError):
        ARC.face_cap = 3  # type: ignore[misc]


# --------------------------------------------------------------------------- faces


def test_new_people_get_new_ids_in_order_of_first_appearance():
    reg = IdentityRegistry(ARC)
    dets = cluster(5, basis(0), T1, x=0.1) + cluster(2, basis(1), T0, x=0.6)
    ids = reg.assign(dets)
    assert ids == ["[face_1]", "[face_2]"]
    assert {d.identity for d in dets if d.cluster == 2} == {"[face_1]"}  # seen first
    assert {d.identity for d in dets if d.cluster == 5} == {"[face_2]"}


def test_returning_person_keeps_their_id_and_threshold_is_inclusive_above():
    reg = IdentityRegistry(ARC)
    reg.assign(cluster(0, basis(0), T0))
    again = cluster(0, mix(basis(0), basis(5), 0.35), T1)
    assert reg.assign(again) == ["[face_1]"]
    stranger = cluster(0, mix(basis(0), basis(6), 0.25), T0)  # below 0.3 on average
    assert reg.assign(stranger) == ["[face_2]"]


def test_mean_similarity_over_the_whole_bank_decides():
    reg = IdentityRegistry(ARC)
    # The character's bank holds two different looks (3 + 2 faces); a cluster like the first
    # look has mean similarity 3/5 = 0.6 and joins; one like neither (0.0) does not.
    reg.assign(cluster(0, basis(0), T0) + cluster(0, basis(1), [0.3, 0.4]))
    assert reg.assign(cluster(0, basis(0), T1)) == ["[face_1]"]
    assert reg.assign(cluster(0, basis(2), T1)) == ["[face_2]"]


def test_two_clusters_in_one_frame_never_join_one_character():
    reg = IdentityRegistry(ARC)
    reg.assign(cluster(0, basis(0), T0, x=0.1) + cluster(1, basis(1), T0, x=0.6))
    # Both new clusters look most like [face_1]; they share a frame (0.6), so the weaker one
    # tries its next-best character, [face_2], which it matches above the threshold.
    a = cluster(0, basis(0), [0.5, 0.6], x=0.1)
    b = cluster(1, mix(basis(0), basis(1), 0.75), [0.6, 0.7], x=0.6)
    ids = reg.assign(a + b)
    assert {d.identity for d in a} == {"[face_1]"}
    assert {d.identity for d in b} == {"[face_2]"}
    assert ids == ["[face_1]", "[face_2]"]


def test_same_frame_rule_creates_a_new_character_when_no_other_matches():
    reg = IdentityRegistry(ARC)
    reg.assign(cluster(0, basis(0), T0))
    a = cluster(0, basis(0), T1, x=0.1)
    b = cluster(1, mix(basis(0), basis(3), 0.9), T1, x=0.6)  # a look-alike beside them
    reg.assign(a + b)
    assert {d.identity for d in a} == {"[face_1]"}
    assert {d.identity for d in b} == {"[face_2]"}


def test_clusters_of_one_person_in_different_frames_may_join_one_character():
    reg = IdentityRegistry(ARC)
    # HDBSCAN split one new person into two clusters that never share a frame.
    ids = reg.assign(cluster(0, basis(0), T0) + cluster(1, mix(basis(0), basis(1), 0.9), T1))
    assert ids == ["[face_1]"] and len(reg) == 1


def test_noise_detections_get_no_identity():
    reg = IdentityRegistry(ARC)
    noise = cluster(-1, basis(0), T0)
    assert reg.assign(noise) == [] and all(d.identity == "" for d in noise)


def test_face_bank_is_capped_and_pruned_to_the_least_redundant():
    reg = IdentityRegistry(ARC)
    # 10 distinct looks of one person (all within 0.5 of a shared direction) ...
    shared = basis(63)
    looks = [mix(shared, basis(k), 0.6) for k in range(10)]
    dets = [
        FaceDetection(0.1 * k, (0.1, 0.1, 0.3, 0.4), 0.9, 0.9, e, cluster=0)
        for k, e in enumerate(looks)
    ]
    reg.assign(dets)
    bank = reg.characters["[face_1]"].faces
    assert bank.shape == (10, DIM)  # not above the cap yet
    # ... then 6 near-duplicates of look 0: past the cap of 15, pruned to 10.
    dupes = [unit(looks[0] + 0.01 * basis(20 + k)) for k in range(6)]
    dets = [
        FaceDetection(2 + 0.1 * k, (0.1, 0.1, 0.3, 0.4), 0.9, 0.9, e, cluster=0)
        for k, e in enumerate(dupes)
    ]
    assert reg.assign(dets) == ["[face_1]"]
    bank = reg.characters["[face_1]"].faces
    assert bank.shape == (10, DIM)
    kept_looks = sum(any(np.allclose(row, look) for row in bank) for look in looks[1:])
    assert kept_looks == 9  # every distinct look survives; duplicates of look 0 collapse
    near_zero = [row for row in bank if float(row @ looks[0]) > 0.99]
    assert len(near_zero) == 1


def test_prune_bank_keeps_order_and_is_deterministic():
    rng = np.random.default_rng(3)
    bank = np.stack([unit(rng.standard_normal(DIM)) for _ in range(18)])
    bank[5] = bank[4]  # an exact duplicate goes first
    kept = prune_bank(bank, 10)
    assert kept.shape == (10, DIM)
    assert np.array_equal(kept, prune_bank(bank, 10))
    positions = [int(np.flatnonzero((bank == row).all(1))[0]) for row in kept]
    assert positions == sorted(positions)
    assert sum(np.allclose(row, bank[4]) for row in kept) <= 1
    assert prune_bank(bank[:3], 10) is not None and len(prune_bank(bank[:3], 10)) == 3


def test_crop_is_the_best_face_of_the_character(tmp_path):
    reg = IdentityRegistry(ARC)
    frames = [Frame(t, np.full((90, 160, 3), int(t * 100), np.uint8)) for t in T0]
    dets = cluster(0, basis(0), T0)
    dets[1].quality = 2.0  # the frame at 0.1 s has the best face
    reg.assign(dets, frames)
    char = reg.characters["[face_1]"]
    assert char.crop is not None and char.crop_quality == 2.0
    import io

    from PIL import Image

    crop = np.asarray(Image.open(io.BytesIO(char.crop)))
    assert abs(float(crop.mean()) - 10) < 3  # grey level of the frame at 0.1 s


# --------------------------------------------------------------------------- voices


def test_voice_matching_threshold_and_banks():
    reg = IdentityRegistry(ARC)
    reg.assign(cluster(0, basis(0), T0))
    assert reg.match_voice(basis(10)) is None  # no voice banked yet
    reg.add_voice("[face_1]", basis(10))
    assert reg.match_voice(mix(basis(10), basis(11), 0.75)) == "[face_1]"
    assert reg.match_voice(mix(basis(10), basis(11), 0.65)) is None
    gid = reg.new_voice_character(basis(12))
    assert gid == "[voice_1]" and reg.match_voice(basis(12)) == gid  # a namespace of its own
    assert reg.characters[gid].faces.size == 0  # known by voice only
    with pytest.raises(ValueError, match="no character"):
        reg.add_voice("[face_99]", basis(1))


def test_voice_bank_cap():
    reg = IdentityRegistry(ARC)
    gid = reg.new_voice_character(basis(0))
    for k in range(1, 26):
        reg.add_voice(gid, mix(basis(0), basis(k), 0.9))
    assert reg.characters[gid].voices.shape == (20, DIM)


def test_voice_only_characters_never_match_faces():
    reg = IdentityRegistry(ARC)
    reg.new_voice_character(basis(0))
    assert reg.assign(cluster(0, basis(0), T0)) == ["[face_1]"]


def test_a_voice_linked_to_a_face_resolves_to_it_and_the_link_is_saved(tmp_path):
    reg = IdentityRegistry(ARC)
    reg.assign(cluster(0, basis(0), T0))
    voice = reg.new_voice_character(basis(10))
    assert reg.match_voice(basis(10)) == voice
    assert reg.add_evidence(voice, "[face_1]", 2.0) == 2.0
    reg.add_evidence(voice, "[face_9]", 0.5)
    assert reg.evidence_share(voice, "[face_1]") == pytest.approx(0.8)
    reg.link_voice(voice, "[face_1]", "visible_alone")
    assert reg.match_voice(basis(10)) == "[face_1]" and reg.resolve(voice) == "[face_1]"
    assert reg.links[voice] == {"to": "[face_1]", "how": "visible_alone", "evidence_s": 2.0}
    reg.save(tmp_path)
    back = IdentityRegistry.load(tmp_path)
    assert back.links == reg.links and back.resolve(voice) == "[face_1]"
    assert back.match_voice(basis(10)) == "[face_1]"
    assert back.new_voice_character(basis(11)) == "[voice_2]"


# --------------------------------------------------------------------------- persistence


def test_save_load_roundtrip_without_pickle(tmp_path):
    reg = IdentityRegistry(ARC)
    frames = [Frame(t, np.full((90, 160, 3), 200, np.uint8)) for t in T0]
    reg.assign(cluster(0, basis(0), T0) + cluster(1, basis(1), T0, x=0.6), frames)
    reg.add_voice("[face_2]", basis(7))
    reg.new_voice_character(basis(8))
    path = reg.save(tmp_path / "run")
    data = json.loads(path.read_text())
    assert data["schema"] == 1 and list(data["characters"]) == ["[face_1]", "[face_2]", "[voice_1]"]
    for entry in data["characters"].values():
        for key in ("faces", "voices"):
            if entry[key]:
                np.load(tmp_path / "run" / entry[key], allow_pickle=False)
    back = IdentityRegistry.load(tmp_path / "run")
    assert back.params == ARC and list(back.characters) == list(reg.characters)
    for gid, c in reg.characters.items():
        b = back.characters[gid]
        assert np.array_equal(b.faces, c.faces) and np.array_equal(b.voices, c.voices)
        assert b.crop == c.crop and b.clips == c.clips and b.first_seen == c.first_seen
    assert back.new_voice_character(basis(9)) == "[voice_2]"  # numbering continues
    assert back.assign(cluster(0, basis(5), T0)) == ["[face_3]"]
    assert back.match_voice(basis(7)) == "[face_2]"
    pics = gallery(tmp_path / "run")
    assert [g for g, _ in pics] == ["[face_1]", "[face_2]"]  # the voice-only one has no face
    assert all(p.read_bytes()[:2] == b"\xff\xd8" for _, p in pics)  # JPEG


def test_load_of_the_memorizers_placeholder_is_empty(tmp_path):
    (tmp_path / "identities.json").write_text('{"schema": 1, "characters": {}}')
    reg = IdentityRegistry.load(tmp_path)
    assert len(reg) == 0 and reg.new_voice_character(basis(0)) == "[voice_1]"
    assert IdentityRegistry.load(tmp_path / "missing").characters == {}
    assert gallery(tmp_path / "missing") == []


def test_load_rejects_damaged_registries(tmp_path):
    reg = IdentityRegistry(ARC)
    reg.assign(cluster(0, basis(0), T0))
    reg.save(tmp_path)
    (tmp_path / "identities" / "face_1.faces.npy").unlink()
    with pytest.raises(StoreError, match="missing"):
        IdentityRegistry.load(tmp_path)
    (tmp_path / "identities" / "face_1.faces.npy").write_bytes(b"not numpy")
    with pytest.raises(StoreError, match="cannot read"):
        IdentityRegistry.load(tmp_path)
    obj = np.array([{"a": 1}], dtype=object)
    np.save(tmp_path / "identities" / "face_1.faces.npy", obj, allow_pickle=True)
    with pytest.raises(StoreError):
        IdentityRegistry.load(tmp_path)  # an object array would need pickle: refused
    (tmp_path / "identities.json").write_text('{"schema": 99}')
    with pytest.raises(StoreError, match="schema"):
        IdentityRegistry.load(tmp_path)


# --------------------------------------------------------------------------- real faces


@pytest.mark.slow
def test_dlib_embeddings_of_the_same_people_match_again(group_photo_path):
    """Real dlib embeddings: six people at full size, then again at 60 %: same six ids."""
    pytest.importorskip("dlib")
    from PIL import Image

    from taskmem_lab.perception.faces import FaceParams, detect_faces, make_face_backend

    image = Image.open(group_photo_path).convert("RGB")
    params = FaceParams(detect_max_side=1280, embed_fps=None)  # detect_faces embeds every face
    try:
        backend = make_face_backend(params)
    except ImportError as exc:  # the faces extra is not installed
        pytest.skip(str(exc))
    reg = IdentityRegistry(IdentityParams(face_backend="dlib"))
    order = []
    for k, scale in enumerate((1.0, 0.6)):
        small = image.resize((int(image.width * scale), int(image.height * scale)))
        dets = detect_faces([Frame(float(k), np.asarray(small))], params, backend)
        dets.sort(key=lambda d: d.box[0])
        for i, d in enumerate(dets):
            d.cluster = i
        reg.assign(dets)
        order.append([d.identity for d in dets])
    assert len(order[0]) == 6 and order[0] == order[1] and len(reg) == 6

import pytest

from taskmem_lab.errors import ParseError
from taskmem_lab.face_ids import UNKNOWN, IdMap, globals_in
from taskmem_lab.replies import parse_description, parse_knowledge

GOOD = [
    ('{"description": "A man enters."}', "A man enters."),
    ('```json\n{"description": "A man enters."}\n```', "A man enters."),
    ('Here you go: {"description": "A man enters."} Hope it helps', "A man enters."),
    ("{'description': 'A man enters.'}", "A man enters."),
    ('{"description": "A man enters.",}', "A man enters."),
    ('{"description": "A man enters.', "A man enters."),
    ('[{"description": "A man enters."}]', "A man enters."),
    ('{"description": "  <face_1> waves.  ", "extra": 1}', "<face_1> waves."),
]
BAD = [
    ("", "empty"),
    ("   ", "empty"),
    ("The man walks in.", "no JSON object|no string field"),
    ('{"desc": "A man enters."}', "no string field"),
    ('{"description": ""}', "empty"),
    ('{"description": 42}', "no string field"),
    ("[1, 2, 3]", "no JSON object"),
]


@pytest.mark.parametrize(("reply", "expected"), GOOD)
def test_parse_description_tolerates_common_damage(reply, expected):
    assert parse_description(reply) == expected


@pytest.mark.parametrize(("reply", "why"), BAD)
def test_parse_description_rejects_what_cannot_be_read(reply, why):
    with pytest.raises(ParseError, match=why):
        parse_description(reply)


def test_parse_knowledge():
    assert parse_knowledge('{"knowledge": ["a", " ", "b", 3]}') == ["a", "b"]
    assert parse_knowledge('{"knowledge": "one"}') == ["one"]
    with pytest.raises(ParseError):
        parse_knowledge('{"facts": []}')


def test_id_map_round_trip_and_first_appearance_order():
    ids = IdMap.from_order(["[face_7]", "[face_2]", "[face_7]", "[face_9]"])
    assert ids.to_local_ids == {
        "[face_7]": "<face_1>",
        "[face_2]": "<face_2>",
        "[face_9]": "<face_3>",
    }
    local = ids.to_local("[face_2] hands [face_7] a cup; [face_5] watches")
    assert local == "<face_2> hands <face_1> a cup; [face_5] watches"
    back, unknown = ids.to_global("<face_2> hands <face_1> a cup; <face_4> laughs")
    assert back == f"[face_2] hands [face_7] a cup; {UNKNOWN} laughs"
    assert unknown == ["<face_4>"]


def test_globals_in_order():
    assert globals_in("[face_3] and [face_1] and [face_3]") == ["[face_3]", "[face_1]"]

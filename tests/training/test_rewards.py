"""Reward arithmetic on hand-made cases, and the judges through the local OpenAI-compatible server."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from taskmem_lab.backends import make_model
from taskmem_lab.backends.base import Reply, Request, all_text
from taskmem_lab.backends.fake import FakeModel
from taskmem_lab.errors import ConfigError, ModelError, ParseError, StoreError
from taskmem_lab.media.stream import load_stream
from taskmem_lab.memorize import memorize
from taskmem_lab.params import MemorizeParams
from taskmem_lab.training.replay import RunReplay
from taskmem_lab.training.rewards import (
    Candidate,
    ClipContext,
    Judges,
    RewardParams,
    TextVerdict,
    VideoVerdict,
    bad_face_tags,
    check_format,
    compute_score,
    count_tokens,
    fractional_ranks,
    parse_pair_verdict,
    parse_ranking,
    parse_text_verdict,
    parse_video_verdict,
    quality_reward,
    reward_summaries,
    reward_summary,
    richness_bonuses,
    score_clip,
    score_memory,
    thinking_reward,
)

# --------------------------------------------------------------------------- format

GOOD = '{"description": "a man in a red coat opens the door"}'


@pytest.mark.parametrize(
    "completion, problem",
    [
        (GOOD, None),
        ('<think>plan the entry</think>{"description": "x"}', None),
        ('<think>\nplan\n</think>\n\n{"description": "<face_1> waves to <face_12>"}', None),
        ('plan opened by the template</think>{"description": "x"}', None),
        ('{"description": "her face is red"}', None),
        ('<think>a</think><think>b</think>{"description": "x"}', "closes 2 times"),
        ('<think>a</think> more </think>{"description": "x"}', "closes 2 times"),
        ('<think>never closed {"description": "x"}', "never closes"),
        ('Sure! <think>a</think>{"description": "x"}', "text before the reasoning block"),
        ('```json\n{"description": "x"}\n```', "not strict JSON"),
        ('Here it is: {"description": "x"}', "not strict JSON"),
        ("{'description': 'x'}", "not strict JSON"),
        ('{"description": "x",}', "not strict JSON"),
        ("", "not strict JSON"),
        ('["x"]', "not a JSON object"),
        ('{"description": "x", "note": "y"}', "keys must be exactly"),
        ('{"text": "x"}', "keys must be exactly"),
        ('{"description": ""}', "non-empty string"),
        ('{"description": "   "}', "non-empty string"),
        ('{"description": 5}', "non-empty string"),
        ('{"description": "<Face_1> waves"}', "invalid face tags ['<Face_1>']"),
        ('{"description": "<face 2> waves"}', "invalid face tags ['<face 2>']"),
        ('{"description": "<face_> waves"}', "invalid face tags"),
        ('{"description": "<person_1> waves"}', "invalid face tags ['<person_1>']"),
        ('{"description": "[face_3] waves"}', "invalid face tags ['[face_3]']"),
        ('{"description": "face_4 sits down"}', "invalid face tags ['face_4']"),
        ('{"description": "<face_1> and <face1> talk"}', "invalid face tags ['<face1>']"),
    ],
)
def test_format_table(completion, problem):
    result = check_format(completion)
    if problem is None:
        assert result.ok and result.problems == () and result.description
    else:
        assert not result.ok and any(problem in p for p in result.problems), result.problems


def test_format_reasoning_and_required_thinking():
    result = check_format('<think> weigh what is new </think>{"description": "x"}')
    assert result.ok and result.reasoning == "weigh what is new" and result.description == "x"
    assert not check_format(GOOD, require_thinking=True).ok
    assert "no reasoning block" in check_format(GOOD, require_thinking=True).problems
    assert bad_face_tags("<face_1> meets <face_2>, her face is calm, 3<4 > 2") == []


# --------------------------------------------------------------------------- thinking length


@pytest.mark.parametrize(
    "tokens, expected",
    [
        (0, 0.0),
        (50, 0.0),
        (100, 0.0),
        (101, -0.005),
        (150, -0.25),
        (199, -0.495),
        (200, -0.5),
        (1000, -0.5),
    ],
)
def test_thinking_length_ramp(tokens, expected):
    assert thinking_reward(tokens, threshold=100, penalty=0.5) == pytest.approx(expected)


def test_token_counter_and_rule_rewards():
    assert count_tokens("") == 0
    assert count_tokens("A man, a plan.") == 6  # 4 words, 2 marks
    words = " ".join(["w"] * 150)
    score = compute_score("taskmem/episodic", f"<think>{words}</think>{GOOD}")
    assert score == {"score": 1.0, "format": 1.0, "thinking": 0.0}
    params = RewardParams(think_threshold=100, think_penalty=1.0, format_fail=-1.0)
    from taskmem_lab.training.rewards import rule_rewards

    assert rule_rewards(f"<think>{words}</think>{GOOD}", params)["thinking"] == pytest.approx(-0.5)
    assert rule_rewards(f"<think>{words}</think>```{GOOD}```", params)["score"] == pytest.approx(
        -1.5
    )


def test_reward_params_are_validated():
    with pytest.raises(ConfigError, match="think_threshold"):
        RewardParams(think_threshold=0)
    with pytest.raises(ConfigError, match="think_penalty"):
        RewardParams(think_penalty=-1)


# --------------------------------------------------------------------------- quality

OK_VIDEO = VideoVerdict(True, True)
OK_TEXT = TextVerdict({"repeats_context": False, "cites_subtitles": False})


@pytest.mark.parametrize(
    "video, text, tokens, correct",
    [
        (OK_VIDEO, OK_TEXT, 10, True),
        (OK_VIDEO, OK_TEXT, 300, True),  # exactly the budget
        (OK_VIDEO, OK_TEXT, 301, False),  # over the budget
        (VideoVerdict(False, True), OK_TEXT, 10, False),  # not supported by the frames
        (VideoVerdict(True, False), OK_TEXT, 10, False),  # incoherent with the context
        (OK_VIDEO, TextVerdict({"repeats_context": True, "cites_subtitles": False}), 10, False),
        (OK_VIDEO, TextVerdict({"repeats_context": False, "cites_subtitles": True}), 10, False),
        (VideoVerdict(False, False), TextVerdict({"repeats_context": True}), 10, False),
        (None, None, 10, False),  # no entry to judge
    ],
)
def test_quality_combinations(video, text, tokens, correct):
    params = RewardParams(correct_reward=2.0, wrong_reward=-1.0)
    q = quality_reward(video, text, tokens, params)
    assert q.correct is correct
    assert q.reward == (2.0 if correct else -1.0)
    assert q.within_budget is (tokens <= 300)


# --------------------------------------------------------------------------- richness


@pytest.mark.parametrize(
    "ranking, bonuses",
    [
        ([[2], [1], [3]], {2: 1.0, 1: 0.5, 3: 0.0}),
        ([[1], [2]], {1: 1.0, 2: 0.0}),
        ([[1, 2], [3]], {1: 0.75, 2: 0.75, 3: 0.0}),  # a tie shares the mean rank 1.5
        ([[3], [1, 2]], {3: 1.0, 1: 0.25, 2: 0.25}),
        ([[1, 2, 3]], {1: 0.5, 2: 0.5, 3: 0.5}),  # all tied: the middle
        ([[1]], {1: 1.0}),  # a lone correct candidate is the richest
        ([[4], [2, 3], [1], [5]], {4: 1.0, 2: 0.625, 3: 0.625, 1: 0.25, 5: 0.0}),
    ],
)
def test_richness_normalization(ranking, bonuses):
    got = richness_bonuses(ranking, bonus=1.0)
    assert got == pytest.approx(bonuses)
    assert all(0.0 <= b <= 1.0 for b in got.values())
    assert richness_bonuses(ranking, bonus=0.5) == pytest.approx(
        {k: v / 2 for k, v in bonuses.items()}
    )


def test_fractional_ranks_and_ranking_parser():
    assert fractional_ranks([[2], [1, 3]]) == {2: 1.0, 1: 2.5, 3: 2.5}
    assert parse_ranking('{"ranking": [[2], [1, 3]]}', 3) == [[2], [1, 3]]
    assert parse_ranking('{"ranking": [2, 1, 3]}', 3) == [[2], [1], [3]]
    assert parse_ranking('```json\n{"ranking": [["1"], [2]]}\n```', 2) == [[1], [2]]
    for bad, k in (
        ('{"ranking": [[1], [1]]}', 2),
        ('{"ranking": [[1]]}', 2),
        ('{"ranking": [["x"]]}', 1),
        ("{}", 1),
    ):
        with pytest.raises(ParseError):
            parse_ranking(bad, k)


def test_verdict_parsers():
    assert parse_video_verdict('{"supported": true, "coherent": "no"}') == VideoVerdict(
        True, False, ""
    )
    with pytest.raises(ParseError, match="coherent"):
        parse_video_verdict('{"supported": true}')
    flags = parse_text_verdict(
        '{"repeats_context": false, "mentions_boxes_or_coordinates": false, "cites_subtitles": true,'
        ' "speaker_label_in_quotes": false, "conclusion_statement": false}'
    )
    assert not flags.passed and flags.flags["cites_subtitles"]
    assert [
        parse_pair_verdict(t) for t in ('{"better": "A"}', '{"better": "b."}', '{"better": "Tie"}')
    ] == ["A", "B", "tie"]
    with pytest.raises(ParseError):
        parse_pair_verdict('{"better": "both"}')


# --------------------------------------------------------------------------- a group, by hand


class ScriptedJudge:
    """A test double: answers each judge prompt from a table keyed by purpose and entry text."""

    def __init__(self, verdicts, ranking=None, fail_on=None):
        self.model_id = "scripted:judge"
        self.verdicts = verdicts
        self.ranking = ranking
        self.fail_on = fail_on
        self.requests: list[Request] = []

    def generate(self, request: Request) -> Reply:
        self.requests.append(request)
        text = all_text(request.messages[-1].parts)
        entry = text.split("<entry>\n", 1)[-1].split("\n</entry>", 1)[0]
        if self.fail_on and self.fail_on in text:
            raise ModelError("judge unreachable (scripted)")
        if request.purpose == "reward_richness":
            return Reply(json.dumps({"ranking": self.ranking}), fake=True)
        video, flags = self.verdicts[entry]
        if request.purpose == "reward_video":
            return Reply(json.dumps({"supported": video, "coherent": True}), fake=True)
        body = {
            k: False
            for k in (
                "repeats_context",
                "mentions_boxes_or_coordinates",
                "speaker_label_in_quotes",
                "conclusion_statement",
            )
        }
        return Reply(json.dumps({**body, "cites_subtitles": flags}), fake=True)


def _ctx():
    import numpy as np

    from taskmem_lab.media.video import Frame
    from taskmem_lab.schema import ClipSpec

    frame = Frame(10.0, np.zeros((8, 8, 3), dtype=np.uint8))
    return ClipContext(
        "s", ClipSpec(1, 10.0, 20.0, 0.0), "(none)", "(no speech)", (frame,), 1.0, 85
    )


def test_score_group_hand_made_totals():
    judge = ScriptedJudge(
        {
            "rich entry": (True, False),
            "plain entry": (True, False),
            "made up": (False, False),
            "the subtitle says hi": (True, True),
        },
        ranking=[[1], [2]],
    )
    params = RewardParams(think_threshold=4, think_penalty=1.0, richness_bonus=0.5)
    cands = [
        Candidate("r0", "rich entry", '{"description": "rich entry"}'),
        Candidate(
            "r1",
            "plain entry",
            '<think>one two three four five six</think>{"description": "plain entry"}',
        ),
        Candidate("r2", "made up", '{"description": "made up"}'),
        Candidate("r3", "the subtitle says hi", '```{"description": "the subtitle says hi"}```'),
        Candidate("r4", "", "no json at all"),
    ]
    rows = {r["candidate"]: r for r in score_clip(_ctx(), cands, Judges(judge, judge), params)}
    assert rows["r0"]["total"] == pytest.approx(1 + 0 + 1 + 0.5)
    # 6 reasoning tokens against T=4: half way up the ramp.
    assert rows["r1"]["thinking"] == {"tokens": 6, "reward": -0.5}
    assert rows["r1"]["total"] == pytest.approx(1 - 0.5 + 1 + 0.0)
    assert rows["r1"]["richness"] == {"bonus": 0.0, "rank": 2.0, "of": 2}
    assert rows["r2"]["quality"]["correct"] is False and rows["r2"]["total"] == 1.0
    assert (
        rows["r3"]["format"]["ok"] is False
        and rows["r3"]["quality"]["text"]["flags"]["cites_subtitles"]
    )
    assert rows["r3"]["total"] == 0.0
    assert rows["r4"]["quality"]["note"] == "no description" and rows["r4"]["total"] == 0.0
    ranked = [r for r in judge.requests if r.purpose == "reward_richness"]
    assert len(ranked) == 1 and "made up" not in all_text(ranked[0].messages[-1].parts)
    summary = reward_summary(rows.values())
    assert summary["format"]["rate"] == pytest.approx(3 / 5)
    assert summary["quality"]["correct_rate"] == pytest.approx(2 / 5)
    assert summary["richness"]["bonus_mean"] == pytest.approx(0.5 / 5)


def test_a_failed_judge_call_fails_the_whole_group():
    judge = ScriptedJudge(
        {"a": (True, False), "b": (True, False)}, ranking=[[1], [2]], fail_on="<entry>\nb\n"
    )
    cands = [
        Candidate("r0", "a", '{"description": "a"}'),
        Candidate("r1", "b", '{"description": "b"}'),
    ]
    rows = score_clip(_ctx(), cands, Judges(judge, judge), RewardParams())
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert all("r1: ModelError" in r["error"] for r in rows)
    assert reward_summary(rows)["failed"] == 2


# --------------------------------------------------------------------------- judges over HTTP


class ScriptedMemorizer(FakeModel):
    """A test double memorizer writing given entries, clip by clip (marked fake)."""

    def __init__(self, entries):
        super().__init__("scripted")
        self.entries = list(entries)

    def generate(self, request: Request) -> Reply:
        return Reply(
            json.dumps({"description": self.entries.pop(0)}), model=self.model_id, fake=True
        )


ENTRIES = [
    "A test pattern with a moving colour bar and a counter.",
    "The counter keeps rising. UNSUPPORTED claim of a dog.",
    "The subtitle says the tone continues. A test pattern with a moving colour bar and a counter.",
]


@pytest.fixture()
def scripted_run(media, tmp_path):
    return memorize(
        load_stream(media["tone_27_3"]),
        ScriptedMemorizer(ENTRIES),
        MemorizeParams(),
        str(tmp_path / "run"),
        progress=False,
    )


def test_score_memory_through_the_local_server(scripted_run, api_config, server, tmp_path):
    judge = make_model("openai:local-vlm")
    replay = RunReplay(scripted_run.path)
    summary = score_memory(
        replay, Judges(judge, judge), RewardParams(), "t", concurrency=3, progress=False
    )
    rows = {
        r["clip"]: r
        for r in map(json.loads, Path(summary["path"], "entries.jsonl").read_text().splitlines())
    }
    assert rows[0]["quality"]["correct"] and rows[0]["quality"]["video"]["reason"].startswith(
        "[fake server]"
    )
    assert rows[1]["quality"]["video"]["supported"] is False
    flags = rows[2]["quality"]["text"]["flags"]
    assert flags["cites_subtitles"] and flags["repeats_context"]  # clip 0's sentence again
    assert summary["quality"]["correct_rate"] == pytest.approx(1 / 3)
    assert summary["quality"]["text_flag_rates"]["cites_subtitles"] == pytest.approx(1 / 3)
    assert summary["richness"]["scored"] == 0 and summary["richness"]["note"]
    assert reward_summaries(scripted_run.path)["t"]["quality"] == summary["quality"]
    video_requests = [b for b in server.requests if '"supported"' in b["messages"][0]["content"]]
    assert len(video_requests) == 3
    # The video judge sees only the new span: 10 frames at 1 fps (the window holds more).
    images = [
        sum(p["type"] == "image_url" for p in b["messages"][1]["content"]) for b in video_requests
    ]
    assert sorted(images) == [8, 10, 10]
    assert json.loads(Path(summary["path"], "summary.json").read_text())["judges"] == {
        "text": "openai:local-vlm",
        "video": "openai:local-vlm",
    }


def test_scores_resume_cache_and_refuse_other_settings(scripted_run, api_config, server, tmp_path):
    from taskmem_lab.backends import ResponseCache

    cache = ResponseCache(tmp_path / "c.sqlite")
    judge = make_model("openai:local-vlm", cache)
    judges = Judges(judge, judge)
    first = score_memory(RunReplay(scripted_run.path), judges, RewardParams(), "t", progress=False)
    calls = len(server.requests)
    entries = Path(first["path"], "entries.jsonl")
    lines = entries.read_text().splitlines()
    entries.write_text(lines[0] + "\n")  # as if killed after the first clip
    again = score_memory(RunReplay(scripted_run.path), judges, RewardParams(), "t", progress=False)
    assert len(entries.read_text().splitlines()) == 3 and again["scored"] == 3
    assert len(server.requests) == calls  # the judges' replies came from the cache
    assert again["quality"] == first["quality"]
    with pytest.raises(StoreError, match="different 'params.max_entry_tokens'"):
        score_memory(
            RunReplay(scripted_run.path),
            judges,
            RewardParams(max_entry_tokens=5),
            "t",
            progress=False,
        )


def test_thinking_length_from_a_thinking_server(media, tmp_path, api_config, server):
    server.script("think", "think", "think")
    run = memorize(
        load_stream(media["tone_27_3"]),
        make_model("openai:local-vlm"),
        MemorizeParams(),
        str(tmp_path / "r"),
        progress=False,
    )
    judge = make_model("openai:local-vlm")
    summary = score_memory(
        RunReplay(run.path),
        Judges(judge, judge),
        RewardParams(think_threshold=6),
        "t",
        progress=False,
    )
    assert summary["thinking"]["tokens_mean"] == 8  # "[fake server] reasoning about the clip"
    assert summary["thinking"]["reward_mean"] == pytest.approx(-0.5 * 2 / 6, abs=1e-6)
    assert summary["format"]["rate"] == 1.0


@pytest.mark.slow
def test_score_memory_cli_one_line_errors(scripted_run, api_config, server):
    def run(*args):
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "taskmem_lab.cli",
                "score-memory",
                str(scripted_run.path),
                *args,
                "-q",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )

    ok = run("--judge", "openai:local-vlm", "--video-judge", "openai:local-vlm", "--name", "cli")
    assert ok.returncode == 0, ok.stderr
    assert '"correct_rate": 0.333333' in ok.stdout and "summary.json" in ok.stdout
    missing = run("--judge", "openai:local-vlm")
    assert missing.returncode == 2 and "--video-judge" in missing.stderr
    unknown = run("--judge", "gpt4", "--video-judge", "openai:local-vlm")
    assert (
        unknown.returncode == 2
        and "unknown model spec" in unknown.stderr
        and "Traceback" not in unknown.stderr
    )

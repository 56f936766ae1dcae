"""The `hf` backend: spec options, request conversion, and a real tiny random-weight Idefics3 model.

The model is built offline in a session fixture (`taskmem_lab.testing.tiny_vlm`): a BPE tokenizer
trained on a few sentences, a 32-pixel image processor and a two-layer Idefics3 from a config. Its
weights are random, so its text is gibberish; the tests check the path (tokens in, tokens out,
usage, records), not the words.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from taskmem_lab.backends import CachedModel, ResponseCache, make_model
from taskmem_lab.backends.base import (
    AudioPart,
    ImagePart,
    Message,
    Request,
    Sampling,
    TextPart,
    VideoPart,
)
from taskmem_lab.backends.options import canonical_options, params_from_options, split_options
from taskmem_lab.errors import ConfigError
from taskmem_lab.media.video import Frame
from taskmem_lab.store import RunDir

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from taskmem_lab.backends import hf  # noqa: E402 - after the extras check

IMAGE_SEQ_LEN = 4  # tokens per image of the tiny model (taskmem_lab.testing.tiny_vlm)


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from taskmem_lab.testing.tiny_vlm import IMAGE_SEQ_LEN as built_len
    from taskmem_lab.testing.tiny_vlm import build_tiny_idefics3

    assert built_len == IMAGE_SEQ_LEN
    return build_tiny_idefics3(tmp_path_factory.mktemp("tiny_vlm"))


def frames(times: list[float], size: tuple[int, int] = (48, 64)) -> tuple[Frame, ...]:
    rng = np.random.default_rng(0)
    return tuple(Frame(t, rng.integers(0, 255, size=(*size, 3), dtype=np.uint8)) for t in times)


def clip_request(times: list[float], max_tokens: int = 32) -> Request:
    user = Message(
        "user",
        (
            TextPart("Preceding description: none."),
            VideoPart(frames(times), fps=1.0),
            TextPart('Describe the new span as {"description": "..."}.'),
        ),
    )
    return Request(
        (Message.text("system", "You write episodic memory."), user),
        Sampling(temperature=0.0, max_tokens=max_tokens),
        purpose="episodic",
    )


# --------------------------------------------------------------------------- spec options


def test_split_options_parses_pairs_and_rejects_malformed_ones():
    assert split_options("/m/x") == ("/m/x", {})
    assert split_options("org/m?max_new_tokens=256&dtype=float32") == (
        "org/m",
        {"max_new_tokens": "256", "dtype": "float32"},
    )
    assert split_options("m?revision=a%2Fb")[1] == {"revision": "a/b"}
    for bad, why in [
        ("m?", "nothing after"),
        ("m?dtype", "not key=value"),
        ("m?=3", "not key=value"),
        ("m?top_k=1&top_k=2", "given twice"),
    ]:
        with pytest.raises(ConfigError, match=why):
            split_options(bad)


def test_params_are_typed_validated_and_unknown_keys_name_the_allowed_ones():
    p = params_from_options(
        hf.HFParams,
        {"max_new_tokens": "8", "temperature": "0.5", "top_p": "none", "device": "cpu"},
        "hf:m",
    )
    assert (p.max_new_tokens, p.temperature, p.top_p, p.device) == (8, 0.5, None, "cpu")
    with pytest.raises(
        ConfigError, match=r"unknown option 'max_tokens'; allowed: .*max_new_tokens"
    ):
        params_from_options(hf.HFParams, {"max_tokens": "8"}, "hf:m")
    with pytest.raises(ConfigError, match=r"max_new_tokens='many' must be an integer"):
        params_from_options(hf.HFParams, {"max_new_tokens": "many"}, "hf:m")
    with pytest.raises(ConfigError, match=r"'dtype'.*float32"):
        params_from_options(hf.HFParams, {"dtype": "fp8"}, "hf:m")
    with pytest.raises(ConfigError, match=r"'device'"):
        hf.HFParams(device="tpu")
    with pytest.raises(ConfigError, match=r"'temperature'"):
        hf.HFParams(temperature=-1)
    with pytest.raises(ConfigError, match=r"'video'"):
        hf.HFParams(video="mp4")
    assert hf.HFParams(device="cuda:1").device == "cuda:1"


@pytest.mark.slow  # builds or runs the tiny real model
def test_model_id_carries_the_non_default_options_in_a_stable_order(tiny_vlm):
    a = make_model(f"hf:{tiny_vlm}?max_new_tokens=8&dtype=float32")
    b = make_model(f"hf:{tiny_vlm}?dtype=float32&max_new_tokens=8")
    assert a.model_id == b.model_id == f"hf:{tiny_vlm}?dtype=float32&max_new_tokens=8"
    assert make_model(f"hf:{tiny_vlm}").model_id == f"hf:{tiny_vlm}"
    assert canonical_options(hf.HFParams()) == ""


@pytest.mark.slow  # builds or runs the tiny real model
def test_a_relative_directory_is_named_by_its_absolute_path(tiny_vlm, monkeypatch):
    monkeypatch.chdir(tiny_vlm.parent)
    model = make_model(f"hf:./{tiny_vlm.name}?max_new_tokens=3")
    assert model.model_id == f"hf:{tiny_vlm.resolve()}?max_new_tokens=3"


def test_generation_settings_follow_the_request_unless_the_spec_sets_them():
    s = Sampling(temperature=0.0, max_tokens=100, top_p=0.9, seed=3)
    kwargs, seed = hf.generation_settings(s, hf.HFParams())
    assert kwargs == {"max_new_tokens": 100, "do_sample": False} and seed is None
    kwargs, seed = hf.generation_settings(
        s, hf.HFParams(temperature=0.7, top_k=20, max_new_tokens=8, repetition_penalty=1.1)
    )
    assert kwargs == {
        "max_new_tokens": 8,
        "do_sample": True,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 20,
        "repetition_penalty": 1.1,
    }
    assert seed == 3


# --------------------------------------------------------------------------- conversion


def test_frames_go_as_labelled_images_when_there_is_no_video_input():
    messages, metadata = hf.chat_messages(clip_request([10.0, 11.0, 12.5]), native_video=False)
    assert metadata == []
    assert messages[0] == {
        "role": "system",
        "content": [{"type": "text", "text": "You write episodic memory."}],
    }
    kinds = [b["type"] for b in messages[1]["content"]]
    assert kinds == ["text", "text", "image", "text", "image", "text", "image", "text"]
    labels = [b["text"] for b in messages[1]["content"][1:-1:2]]
    assert labels == ["Frame at 00:00:10", "Frame at 00:00:11", "Frame at 00:00:12.5"]
    image = messages[1]["content"][2]["image"]
    assert image.mode == "RGB" and image.size == (64, 48)


def test_a_native_video_gets_a_stream_time_label_and_exact_grid_timing():
    # Thinned frames of a 2 fps grid: offsets 0, 1.5 and 4 s are grid indices 0, 3 and 8.
    part = VideoPart(frames([20.0, 21.5, 24.0]), fps=2.0)
    request = Request((Message("user", (part,)),))
    messages, metadata = hf.chat_messages(request, native_video=True)
    label, video = messages[0]["content"]
    assert label["text"] == "Video frames from 00:00:20 to 00:00:24 (3 frames)"
    assert video["type"] == "video" and len(video["video"]) == 3
    assert metadata == [
        {"total_num_frames": 9, "fps": 2.0, "frames_indices": [0, 3, 8], "duration": 4.5}
    ]


def test_jpeg_images_are_decoded_and_audio_is_refused_by_a_model_without_audio_input():
    jpeg = frames([0.0])[0].jpeg()
    messages, _ = hf.chat_messages(Request((Message("user", (ImagePart(jpeg),)),)), False)
    assert messages[0]["content"][0]["image"].size == (64, 48)
    audio = Request((Message("user", (AudioPart(b"RIFF"),)),))
    with pytest.raises(ConfigError, match="takes no audio"):
        hf.chat_messages(audio, False, audio_rate=None)


# --------------------------------------------------------------------------- the tiny model


@pytest.mark.slow  # builds or runs the tiny real model
def test_tiny_model_replies_to_frames_and_text_with_usage(tiny_vlm):
    model = make_model(f"hf:{tiny_vlm}?max_new_tokens=12&device=cpu")
    reply = model.generate(clip_request([0.0, 1.0, 2.0, 3.0], max_tokens=500))
    text_only = model.generate(
        Request((Message.text("user", "Is the answer A, B, C or D?"),), purpose="qa")
    )
    assert model.native_video is False  # Idefics3's processor has no video input
    assert isinstance(reply.text, str) and reply.backend == "hf" and reply.model == str(tiny_vlm)
    assert 1 <= reply.usage["completion_tokens"] <= 12  # the spec's budget beats the request's
    assert reply.latency_s > 0 and not reply.fake and not reply.cached
    # Four frames reached the model: their image tokens are in the prompt count.
    assert reply.usage["prompt_tokens"] > text_only.usage["prompt_tokens"] + 4 * IMAGE_SEQ_LEN
    assert text_only.usage["completion_tokens"] >= 1
    # Greedy decoding of the same request is reproducible.
    again = model.generate(clip_request([0.0, 1.0, 2.0, 3.0], max_tokens=500))
    assert (again.text, again.usage) == (reply.text, reply.usage)


@pytest.mark.slow  # builds or runs the tiny real model
def test_models_that_differ_only_in_generation_options_share_the_weights(tiny_vlm):
    answerer = make_model(f"hf:{tiny_vlm}?max_new_tokens=4")
    judge = make_model(f"hf:{tiny_vlm}?temperature=0&max_new_tokens=2")
    other_dtype = make_model(f"hf:{tiny_vlm}?dtype=float16")
    assert answerer.load() is judge.load()
    assert other_dtype.load_key != answerer.load_key
    assert judge.generate(clip_request([0.0])).usage["completion_tokens"] <= 2


@pytest.mark.slow  # builds or runs the tiny real model
def test_more_frames_mean_more_prompt_tokens(tiny_vlm):
    model = make_model(f"hf:{tiny_vlm}?max_new_tokens=2")
    two = model.generate(clip_request([0.0, 1.0]))
    five = model.generate(clip_request([0.0, 1.0, 2.0, 3.0, 4.0]))
    per_frame = (five.usage["prompt_tokens"] - two.usage["prompt_tokens"]) / 3
    assert per_frame > IMAGE_SEQ_LEN  # image tokens plus the "Frame at" label


@pytest.mark.slow  # builds or runs the tiny real model
def test_a_cache_hit_never_loads_the_weights(tiny_vlm, tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")
    spec = f"hf:{tiny_vlm}?max_new_tokens=4"
    first = make_model(spec, cache)
    reply = first.generate(clip_request([0.0]))
    fresh = make_model(spec, cache)
    assert isinstance(fresh, CachedModel)
    hit = fresh.generate(clip_request([0.0]))
    assert hit.cached and hit.text == reply.text
    assert fresh.model._loaded is None  # served from the cache, weights never loaded


# --------------------------------------------------------------------------- a video processor


@pytest.fixture(scope="session")
def tiny_smolvlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("num2words")
    from taskmem_lab.testing.tiny_vlm import build_tiny_smolvlm

    return build_tiny_smolvlm(tmp_path_factory.mktemp("tiny_smolvlm"))


@pytest.mark.slow  # builds or runs the tiny real model
def test_a_video_processor_without_torchvision_is_a_clear_error(tiny_smolvlm):
    from transformers.utils import is_torchvision_available

    if is_torchvision_available():
        pytest.skip("torchvision is installed here")
    model = make_model(f"hf:{tiny_smolvlm}")
    with pytest.raises(ConfigError, match=r"video processors need torchvision.*whl/cpu"):
        model.generate(clip_request([0.0, 1.0]))


@pytest.mark.slow  # builds or runs the tiny real model
def test_smolvlm_takes_the_window_as_native_video(tiny_smolvlm):
    """SmolVLM2-style processors get the window as one video with exact frame timing."""
    pytest.importorskip("torchvision")
    model = make_model(f"hf:{tiny_smolvlm}?max_new_tokens=4")
    reply = model.generate(clip_request([0.0, 1.0, 2.0]))
    assert model.native_video is True
    assert (
        reply.usage["prompt_tokens"] > 3 * IMAGE_SEQ_LEN and reply.usage["completion_tokens"] >= 1
    )
    images = make_model(f"hf:{tiny_smolvlm}?max_new_tokens=4&video=images")
    assert images.generate(clip_request([0.0, 1.0, 2.0])).usage["prompt_tokens"] > 0
    assert images.native_video is False


@pytest.mark.slow  # builds or runs the tiny real model
def test_video_native_is_refused_for_a_processor_without_video(tiny_vlm):
    model = make_model(f"hf:{tiny_vlm}?video=native")
    with pytest.raises(ConfigError, match="has no video input; use video=images"):
        model.generate(clip_request([0.0]))


# --------------------------------------------------------------------------- errors


def test_missing_weights_offline_name_the_model_and_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    with pytest.raises(ConfigError) as err:
        make_model(f"hf:{hf.DEFAULT_MODEL}")
    message = str(err.value)
    assert hf.DEFAULT_MODEL in message and str(tmp_path / "hf-home" / "hub") in message
    assert "offline" in message


@pytest.mark.slow
def test_bad_local_directories_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="directory not found"):
        make_model(f"hf:{tmp_path / 'nope'}")
    with pytest.raises(ConfigError, match="no config.json"):
        make_model(f"hf:{tmp_path}")
    (tmp_path / "config.json").write_text('{"model_type": "no-such-architecture"}')
    model = make_model(f"hf:{tmp_path}")  # loading is lazy
    with pytest.raises(ConfigError, match="could not be loaded"):
        model.generate(clip_request([0.0]))


# --------------------------------------------------------------------------- the CLI


@pytest.mark.slow  # builds or runs the tiny real model
def test_memorize_cli_with_the_tiny_model_records_the_clip(tiny_vlm, media_dir, tmp_path):
    """`taskmem memorize VIDEO --model hf:<dir>` on CPU, as a user runs it.

    The random model's text is not JSON, so the memorizer re-asks once and then stores clip 0 as
    failed with a parse error and exits 1; were the text ever parseable the clip would be stored
    as ok. Either way the record must hold the hf model id, both attempts' usage and the raw reply.
    """
    from taskmem_lab.testing.media import test_video

    video = test_video(media_dir / "short.mp4", 6, audio=False)
    spec = f"hf:{tiny_vlm}?max_new_tokens=8"
    proc = subprocess.run(
        [sys.executable, "-m", "taskmem_lab.cli", "memorize", str(video), "--model", spec]
        + ["--out", str(tmp_path), "--tag", "tiny", "--no-cache", "-q"],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    run = RunDir(tmp_path / "short" / "memory" / "tiny")
    (record,) = run.records()
    manifest = json.loads((run.path / "manifest.json").read_text())
    assert manifest["model"] == record.model == f"hf:{tiny_vlm}?max_new_tokens=8"
    assert record.usage["prompt_tokens"] > 6 * IMAGE_SEQ_LEN
    assert 1 <= record.usage["completion_tokens"] <= 8 * record.attempts
    assert record.latency_s > 0 and not record.fake
    if record.ok:
        assert proc.returncode == 0 and record.episodic
    else:
        assert proc.returncode == 1
        assert record.attempts == 2 and record.error.startswith("ParseError: unparseable")
        assert record.episodic == ""
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("taskmem: error")]
        assert len(errors) == 1 and "clip 0" in errors[0] and "run again to resume" in errors[0]


@pytest.fixture()
def media_dir(tmp_path: Path) -> Path:
    import shutil

    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not on PATH")
    d = tmp_path / "media"
    d.mkdir()
    return d

"""The `vllm` backend: request building, sampling, the async engine and error isolation without vLLM; a
`gpu` test that runs a real Qwen-VL checkpoint where a GPU, vLLM and the weights are present.

Without vLLM the engine and `qwen_vl_utils` are replaced by honest test doubles
(`RecordingProcessor`, `recording_vision_info`, `FakeEngine`) that record what the backend hands
them; the real path is exercised by `test_real_qwen_vl_engine_on_gpu`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from taskmem_lab.backends import make_model, vllm
from taskmem_lab.backends.base import (
    AudioPart,
    ImagePart,
    Message,
    Reply,
    Request,
    Sampling,
    TextPart,
    VideoPart,
)
from taskmem_lab.errors import ConfigError, ModelError
from taskmem_lab.media.video import Frame

GPU_MODEL_ENV = "TASKMEM_TEST_VLLM_MODEL"
GPU_DEFAULT_MODEL = "Qwen/Qwen3-VL-2B-Instruct"


def frames(times: list[float]) -> tuple[Frame, ...]:
    rng = np.random.default_rng(1)
    return tuple(Frame(t, rng.integers(0, 255, size=(36, 64, 3), dtype=np.uint8)) for t in times)


def clip_request(text: str = "Describe the new span.", times=(40.0, 41.0, 42.0)) -> Request:
    user = Message("user", (TextPart(text), VideoPart(frames(list(times)), fps=1.0)))
    return Request(
        (Message.text("system", "You write episodic memory."), user),
        Sampling(temperature=0.0, max_tokens=64),
        purpose="episodic",
    )


# --------------------------------------------------------------------------- test doubles


class RecordingProcessor:
    """Stands in for a Qwen-VL `AutoProcessor`: records messages, renders a marker prompt."""

    def __init__(self, patch_size: int = 16) -> None:
        self.image_processor = SimpleNamespace(patch_size=patch_size)
        self.calls: list[dict[str, Any]] = []

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        self.calls.append(
            {"messages": messages, "tokenize": tokenize, "gen": add_generation_prompt}
        )
        texts = []
        for m in messages:
            content = m["content"]
            if isinstance(content, str):
                texts.append(f"{m['role']}:{content}")
            else:
                texts.append(
                    f"{m['role']}:"
                    + "".join(
                        b["text"] if b["type"] == "text" else f"<{b['type']}>" for b in content
                    )
                )
        return "|".join(texts) + "|assistant:"


def recording_vision_info(messages, **kwargs):
    """Stands in for `qwen_vl_utils.process_vision_info`: returns the blocks it was given."""
    recording_vision_info.last = kwargs
    blocks = [b for m in messages if isinstance(m["content"], list) for b in m["content"]]
    images = [b["image"] for b in blocks if b["type"] == "image"] or None
    videos = [(b["video"], {"fps": b["sample_fps"]}) for b in blocks if b["type"] == "video"]
    return images, videos or None, {"do_sample_frames": False}


class fake_async_engine:  # noqa: N801 - a test double, named as the project names them
    """Stands in for `vllm.AsyncLLMEngine`: each request generates on its own, streaming partial
    outputs; a prompt with LONG takes 0.6 s, others 0.05 s; one with TOO-LONG fails alone."""

    def __init__(self) -> None:
        self.prompts: list[str] = []
        self.request_ids: list[str] = []
        self.running = 0
        self.most_running = 0
        self.finished: list[tuple[str, float]] = []

    async def generate(self, prompt, sampling_params, request_id):
        import asyncio

        text = prompt["prompt"]
        self.prompts.append(text)
        self.request_ids.append(request_id)
        if "TOO-LONG" in text:
            raise ValueError("The decoder prompt is longer than the maximum model length")
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            steps = 12 if "LONG" in text else 1
            for step in range(steps):
                await asyncio.sleep(0.05)
                yield self._output(text, step + 1, finished=step + 1 == steps)
        finally:
            self.running -= 1
            self.finished.append((text, time.perf_counter()))

    @staticmethod
    def _output(prompt: str, tokens: int, finished: bool):
        return SimpleNamespace(
            prompt_token_ids=list(range(len(prompt))),
            finished=finished,
            outputs=[
                SimpleNamespace(
                    text=f"<think>n={len(prompt)}</think>echo {prompt[-12:]}",
                    token_ids=list(range(tokens)),
                )
            ],
        )


@pytest.fixture()
def engine_model(tmp_path: Path):
    """A `VllmModel` whose async engine, processor and vision step are the doubles above."""
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3_vl"}))
    model = make_model(f"vllm:{tmp_path}?max_num_seqs=4")
    assert isinstance(model, vllm.VllmModel)
    engine = fake_async_engine()
    model._engine = vllm.Engine(
        engine, RecordingProcessor(), recording_vision_info, dict, "qwen3_vl"
    )
    yield model, engine
    model._engine.loop.close()


# --------------------------------------------------------------------------- spec and params


def test_spec_options_with_alias_and_defaults(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    model = make_model("vllm:Qwen/Qwen3-VL-8B-Instruct?tp=2&gpu_memory_utilization=0.85")
    assert isinstance(model, vllm.VllmModel)
    p = model.params
    assert (p.tensor_parallel_size, p.gpu_memory_utilization) == (2, 0.85)
    assert (p.temperature, p.top_p, p.top_k) == (0.6, 0.95, 20)
    assert model.model_id == (
        "vllm:Qwen/Qwen3-VL-8B-Instruct?gpu_memory_utilization=0.85&tensor_parallel_size=2"
    )
    assert make_model("vllm:ByteDance-Seed/TaskMem").model_id == "vllm:ByteDance-Seed/TaskMem"
    with pytest.raises(ConfigError, match=r"unknown option 'gpu'; allowed: .*max_model_len.*tp"):
        make_model("vllm:Qwen/Qwen3-VL-8B-Instruct?gpu=0.5")
    with pytest.raises(ConfigError, match=r"'gpu_memory_utilization'.*\(0, 1\]"):
        make_model("vllm:Qwen/Qwen3-VL-8B-Instruct?gpu_memory_utilization=1.5")
    with pytest.raises(ConfigError, match="twice"):
        make_model("vllm:Qwen/Qwen3-VL-8B-Instruct?tp=2&tensor_parallel_size=2")
    with pytest.raises(ConfigError, match="names no model"):
        make_model("vllm:?tp=2")


def test_building_requests_never_imports_vllm():
    messages = vllm.qwen_messages(clip_request(), vllm.VllmParams())
    vllm.engine_input(messages, RecordingProcessor(), recording_vision_info, "qwen3_vl")
    assert "vllm" not in sys.modules


def test_sampling_defaults_are_qwen3_thinking_and_none_follows_the_request():
    request = Sampling(temperature=0.0, max_tokens=300, seed=7)
    assert vllm.sampling_settings(request, vllm.VllmParams()) == {
        "temperature": 0.6,
        "top_p": 0.95,
        "top_k": 20,
        "max_tokens": 300,
        "seed": 7,
    }
    follow = vllm.VllmParams(temperature=None, max_tokens=50)
    assert vllm.sampling_settings(request, follow) == {
        "temperature": 0.0,
        "max_tokens": 50,
        "seed": 7,
    }


# --------------------------------------------------------------------------- request building


def test_qwen_messages_for_a_clip():
    params = vllm.VllmParams(video_max_pixels=200_704)
    request = clip_request(times=(40.0, 42.0, 44.0, 46.0))  # a 1 fps window thinned to 0.5 fps
    system, user = vllm.qwen_messages(request, params)
    assert system == {"role": "system", "content": "You write episodic memory."}
    text, label, video = user["content"]
    assert text == {"type": "text", "text": "Describe the new span."}
    assert label["text"] == "Video frames from 00:00:40 to 00:00:46 (4 frames)"
    assert video["type"] == "video" and video["sample_fps"] == 0.5
    assert video["max_pixels"] == 200_704
    assert [im.size for im in video["video"]] == [(64, 36)] * 4
    assert all(im.mode == "RGB" for im in video["video"])


def test_qwen_messages_for_images_text_and_the_reask_turn():
    jpeg = frames([0.0])[0].jpeg()
    request = Request(
        (
            Message("user", (ImagePart(jpeg), TextPart("What is shown?"))),
            Message.text("assistant", "not json"),
            Message.text("user", "Reply with JSON."),
        )
    )
    first, assistant, follow = vllm.qwen_messages(request, vllm.VllmParams(image_max_pixels=4096))
    assert first["content"][0]["image"].size == (64, 36)
    assert first["content"][0]["max_pixels"] == 4096
    assert assistant == {"role": "assistant", "content": "not json"}
    assert follow["content"] == [{"type": "text", "text": "Reply with JSON."}]


def test_unusable_parts_are_clear_errors():
    with pytest.raises(ConfigError, match="take no audio"):
        vllm.qwen_messages(Request((Message("user", (AudioPart(b"RIFF"),)),)), vllm.VllmParams())
    with pytest.raises(ModelError, match="no frames"):
        vllm.qwen_messages(
            Request((Message("user", (VideoPart((), fps=1.0),)),)), vllm.VllmParams()
        )
    with pytest.raises(ModelError, match="cannot be decoded"):
        vllm.qwen_messages(
            Request((Message("user", (ImagePart(b"not a jpeg"),)),)), vllm.VllmParams()
        )


@pytest.mark.parametrize(
    ("model_type", "metadata"), [("qwen3_vl", True), ("qwen3_vl_moe", True), ("qwen2_5_vl", False)]
)
def test_engine_input_for_qwen_families(model_type, metadata):
    processor = RecordingProcessor(patch_size=16 if metadata else 14)
    messages = vllm.qwen_messages(clip_request(), vllm.VllmParams())
    data = vllm.engine_input(messages, processor, recording_vision_info, model_type)
    assert processor.calls[-1]["tokenize"] is False and processor.calls[-1]["gen"] is True
    assert data["prompt"].endswith("|assistant:") and "<video>" in data["prompt"]
    assert recording_vision_info.last == {
        "image_patch_size": 16 if metadata else 14,
        "return_video_kwargs": True,
        "return_video_metadata": metadata,
    }
    ((clip, meta),) = data["multi_modal_data"]["video"]
    assert len(clip) == 3 and meta == {"fps": 1.0}
    assert "image" not in data["multi_modal_data"]
    assert data["mm_processor_kwargs"] == {"do_sample_frames": False}


def test_engine_input_for_text_only_and_unsupported_models():
    messages = vllm.qwen_messages(
        Request((Message.text("user", "Answer A, B, C or D."),)), vllm.VllmParams()
    )
    data = vllm.engine_input(messages, RecordingProcessor(), recording_vision_info, "qwen3_vl")
    assert data == {"prompt": "user:Answer A, B, C or D.|assistant:"}
    with pytest.raises(ConfigError, match=r"model type 'llava'.*vllm serve"):
        vllm.engine_input(messages, RecordingProcessor(), recording_vision_info, "llava")


def test_engine_input_with_real_qwen_vl_utils():
    """Where qwen-vl-utils (and so torchvision) is installed, its real processing of a window."""
    pytest.importorskip("torchvision")
    qvu = pytest.importorskip("qwen_vl_utils")
    messages = vllm.qwen_messages(clip_request(), vllm.VllmParams())
    data = vllm.engine_input(messages, RecordingProcessor(), qvu.process_vision_info, "qwen3_vl")
    ((video, meta),) = data["multi_modal_data"]["video"]
    assert video.shape[0] == 4  # three frames padded to an even count
    assert video.shape[2] % 32 == 0 and video.shape[3] % 32 == 0
    assert meta["fps"] == 1.0


def test_reply_from_output_splits_thinking_and_counts_tokens():
    output = SimpleNamespace(
        prompt_token_ids=[0] * 812,
        outputs=[SimpleNamespace(text='plan</think>\n\n{"description": "x"}', token_ids=[1] * 40)],
    )
    reply = vllm.reply_from_output(output, 1.5, "Qwen/Qwen3-VL-8B-Thinking")
    assert reply.text == '{"description": "x"}' and reply.reasoning == "plan"
    assert reply.usage == {"prompt_tokens": 812, "completion_tokens": 40}
    assert (reply.latency_s, reply.backend) == (1.5, "vllm")
    with pytest.raises(ModelError, match="no completion"):
        vllm.reply_from_output(SimpleNamespace(prompt_token_ids=[], outputs=[]), 0, "m")


# --------------------------------------------------------------------------- the async engine


def test_generate_many_isolates_a_bad_request(engine_model):
    model, engine = engine_model
    requests = [clip_request("first"), clip_request("TOO-LONG"), clip_request("third")]
    outcomes = model.generate_many(requests, return_exceptions=True)
    assert [type(o) for o in outcomes] == [Reply, ModelError, Reply]
    assert "longer than the maximum model length" in str(outcomes[1])
    # each request is its own engine request: nothing is run twice to isolate the failure
    assert len(engine.prompts) == 3 and len(set(engine.request_ids)) == 3
    ok = outcomes[0]
    assert ok.text.startswith("echo") and ok.reasoning.startswith("n=")
    assert ok.usage["completion_tokens"] == 1 and ok.backend == "vllm"  # the final output's
    with pytest.raises(ModelError, match=r"1 of 3 requests failed \(#1:"):
        model.generate_many(requests)
    audio = Request((Message("user", (AudioPart(b"RIFF"),)),))
    mixed = model.generate_many([audio, clip_request("fine")], return_exceptions=True)
    assert isinstance(mixed[0], ConfigError) and isinstance(mixed[1], Reply)


def test_streams_join_and_leave_the_running_batch_independently(engine_model):
    """A long generation does not hold back the short ones that arrive while it runs (the
    coalescing batcher this replaced made a batch wait for its longest member)."""
    model, engine = engine_model
    replies: dict[str, Reply] = {}
    returned: dict[str, float] = {}

    def stream(text: str, delay: float) -> None:
        time.sleep(delay)
        replies[text] = model.generate(clip_request(text))
        returned[text] = time.perf_counter()

    threads = [threading.Thread(target=stream, args=("LONG think", 0.0))]
    threads += [threading.Thread(target=stream, args=(f"short {i}", 0.1)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(replies) == 6 and all(r.text.startswith("echo") for r in replies.values())
    assert replies["LONG think"].usage["completion_tokens"] == 12
    assert engine.most_running >= 2  # requests ran side by side in one engine
    long_done = returned["LONG think"]
    assert all(returned[f"short {i}"] < long_done for i in range(5))
    assert all(
        r.latency_s < replies["LONG think"].latency_s for k, r in replies.items() if "short" in k
    )


def test_missing_vllm_is_a_config_error_with_the_install_hint(tmp_path):
    if _has("vllm") and _has("qwen_vl_utils"):
        pytest.skip("vllm is installed here")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3_vl"}))
    model = make_model(f"vllm:{tmp_path}")
    with pytest.raises(ConfigError, match=r"pip install taskmem_lab\[vllm\]"):
        model.generate(clip_request())


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# --------------------------------------------------------------------------- on a GPU


@pytest.mark.gpu
def test_real_qwen_vl_engine_on_gpu(tmp_path):
    """A small Qwen-VL checkpoint in vLLM: a batch of clips, text-only QA, and `taskmem memorize`.

    The model is `$TASKMEM_TEST_VLLM_MODEL` (a hub id or directory; default Qwen3-VL-2B-Instruct);
    skipped without a CUDA GPU, vLLM, qwen-vl-utils or the weights.
    """
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    pytest.importorskip("vllm")
    pytest.importorskip("qwen_vl_utils")
    name = os.environ.get(GPU_MODEL_ENV, GPU_DEFAULT_MODEL)
    spec = f"vllm:{name}?max_model_len=16384&gpu_memory_utilization=0.6&max_tokens=256"
    from taskmem_lab.backends import weights

    if not weights.is_local(name) and not weights.is_cached(name):
        pytest.skip(f"{name} is not in the Hugging Face cache ({weights.hf_cache_dir()})")
    model = make_model(spec)
    assert isinstance(model, vllm.VllmModel)
    from taskmem_lab.media.stream import load_stream
    from taskmem_lab.media.video import StreamFrames
    from taskmem_lab.testing.media import test_video

    video = test_video(tmp_path / "pattern.mp4", 20, size="320x240", audio=False)
    frames_src = StreamFrames(load_stream(video))
    window = tuple(frames_src.window([float(t) for t in range(10)]))
    frames_src.close()
    clip = Request(
        (
            Message(
                "user",
                (
                    VideoPart(window, fps=1.0),
                    TextPart('Describe the video in one sentence as {"description": "..."}.'),
                ),
            ),
        ),
        Sampling(max_tokens=256),
    )
    qa = Request((Message.text("user", "What is 2 + 3? Reply with the number only."),))
    replies = model.generate_many([clip, clip, qa])
    for r in replies:
        assert r.text and r.usage["prompt_tokens"] > 0 and r.usage["completion_tokens"] > 0
    assert replies[0].usage["prompt_tokens"] > replies[2].usage["prompt_tokens"] + 100
    assert "5" in replies[2].text

    proc = subprocess.run(
        [sys.executable, "-m", "taskmem_lab.cli", "memorize", str(video), "--model", spec]
        + ["--out", str(tmp_path / "runs"), "--tag", "q", "--no-cache", "-q"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = (
        (tmp_path / "runs" / "pattern" / "memory" / "q" / "clips.jsonl").read_text().splitlines()
    )
    records = [json.loads(x) for x in lines]
    assert len(records) == 2 and all(r["status"] == "ok" and r["episodic"] for r in records)

"""`vllm`: Qwen-VL models (Qwen3-VL, the TaskMem checkpoint) in-process with vLLM, on GPU.

Floor 2. Spec `vllm:<hub-id-or-directory>[?key=value&...]`, e.g. `vllm:Qwen/Qwen3-VL-8B-Instruct`,
`vllm:ByteDance-Seed/TaskMem?tp=2` (a Qwen3-VL-30B-A3B fine-tune) or `vllm:/ckpt/taskmem?
gpu_memory_utilization=0.85&max_model_len=32768`. A `Request` becomes Qwen-VL chat messages
(`qwen_messages`, pure), then a vLLM prompt plus multimodal data through the checkpoint's chat
template and `qwen_vl_utils.process_vision_info` (`engine_input`, pure given the processor and
that function); neither step imports vLLM, so both are tested without it.

Many streams share one engine: vLLM's asynchronous engine (`AsyncLLMEngine`, vLLM V1's
`AsyncLLM`) on a private event loop (`engine_loop.EngineLoop`). Each `generate(request)`, from any
stream's thread, is its own engine request: it joins the running batch when it arrives and leaves
it when its own generation ends (continuous batching), so a short reply never waits for the
longest thinking trace of a batch. `generate_many(requests)` submits them all at once.
`<think>` reasoning is split from the answer; usage (prompt tokens include vision tokens) and
latency (building the input plus the request's time in the engine) are recorded as
`openai_compat` does.

A Phase-Two checkpoint (`adapter_layers` in its text config, `adapter.steer` weights; see
`backends.steer`) runs with its steer adapters: the engine starts with the `taskmem_steer` plugin
(`backends.vllm_steer`) registered, and the steer enters the model's `identity`. A steer file is
not applied here: export it into a checkpoint first (`taskmem adapt-export`).

For a long-running service prefer `vllm serve` + the `openai` backend (docs/models.md,
section 'Many streams: serve the model, point the `openai` backend at it').
Needs a CUDA GPU and the `vllm` extra: `pip install taskmem_lab[vllm]`.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskmem_lab.backends.base import (
    AudioPart,
    ImagePart,
    Reply,
    Request,
    Sampling,
    TextPart,
    VideoPart,
    all_text,
    split_reasoning,
)
from taskmem_lab.backends.engine_loop import EngineLoop
from taskmem_lab.backends.options import (
    check_option,
    model_id,
    params_from_options,
    split_options,
)
from taskmem_lab.backends.visual import effective_fps, frame_images, jpeg_image, window_label
from taskmem_lab.backends.weights import (
    SharedWeights,
    cached_folder,
    is_local,
    load_error,
    locate,
)
from taskmem_lab.errors import ConfigError, ModelError, TaskmemError

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install taskmem_lab[vllm]"
# Model types whose inputs `qwen_vl_utils` knows how to build; Qwen2 families take fps in the
# processor kwargs, Qwen3 families take per-video metadata.
QWEN2_TYPES = ("qwen2_vl", "qwen2_5_vl")
QWEN3_TYPES = ("qwen3_vl", "qwen3_vl_moe")
ALIASES = {"tp": "tensor_parallel_size"}


@dataclass(frozen=True)
class VllmParams:
    """Options of the `vllm` backend, set in the spec after `?` (`tp` is `tensor_parallel_size`).

    Sampling defaults are Qwen3-VL's recommendation for thinking models (greedy decoding makes
    them loop); a sampling option set to `none` follows what each request asks for instead.

    Attributes:
        tensor_parallel_size: GPUs one copy of the model is split over.
        gpu_memory_utilization: fraction of each GPU's memory vLLM may take (weights + KV cache).
        max_model_len: longest prompt + completion in tokens (bounds KV-cache size).
        max_num_seqs: most sequences the engine decodes together (its running batch).
        temperature: sampling temperature (`none`: the request's).
        top_p: nucleus sampling mass (`none`: the request's, if any).
        top_k: sample from the k most likely tokens (`none`: no limit).
        max_tokens: completion budget per call (`none`: the request's `max_tokens`).
        max_images: most images per prompt (`limit_mm_per_prompt`).
        max_videos: most video windows per prompt.
        video_max_pixels: pixel cap per video frame for `qwen_vl_utils` (`none`: its default).
        image_max_pixels: pixel cap per image (`none`: its default).
        dtype: weights dtype, `auto` or a torch dtype name.
        seed: engine seed.
        enforce_eager: skip CUDA-graph capture (faster start, slower decode).
        revision: hub branch, tag or commit to load.
    """

    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int = 32768
    max_num_seqs: int = 16
    temperature: float | None = 0.6
    top_p: float | None = 0.95
    top_k: int | None = 20
    max_tokens: int | None = None
    max_images: int = 8
    max_videos: int = 1
    video_max_pixels: int | None = None
    image_max_pixels: int | None = None
    dtype: str = "auto"
    seed: int = 0
    enforce_eager: bool = False
    revision: str | None = None

    def __post_init__(self) -> None:
        name = type(self).__name__
        check_option(self.tensor_parallel_size >= 1, name, "tensor_parallel_size", "must be >= 1")
        check_option(
            0 < self.gpu_memory_utilization <= 1,
            name,
            "gpu_memory_utilization",
            f"must be in (0, 1], got {self.gpu_memory_utilization}",
        )
        check_option(self.max_model_len >= 256, name, "max_model_len", "must be >= 256 tokens")
        check_option(self.max_num_seqs >= 1, name, "max_num_seqs", "must be >= 1")
        check_option(
            self.temperature is None or self.temperature >= 0, name, "temperature", "must be >= 0"
        )
        check_option(self.top_p is None or 0 < self.top_p <= 1, name, "top_p", "must be in (0, 1]")
        check_option(self.top_k is None or self.top_k >= 1, name, "top_k", "must be >= 1")
        check_option(
            self.max_tokens is None or self.max_tokens >= 1, name, "max_tokens", "must be >= 1"
        )
        check_option(self.max_images >= 0, name, "max_images", "must be >= 0")
        check_option(self.max_videos >= 0, name, "max_videos", "must be >= 0")
        for key in ("video_max_pixels", "image_max_pixels"):
            value = getattr(self, key)
            check_option(value is None or value >= 1024, name, key, "must be >= 1024 pixels")
        check_option(
            self.dtype in ("auto", "float16", "bfloat16", "float32"),
            name,
            "dtype",
            f"must be auto, float16, bfloat16 or float32, got {self.dtype!r}",
        )


# --------------------------------------------------------------------------- pure request building


def qwen_messages(request: Request, params: VllmParams) -> list[dict[str, Any]]:
    """Qwen-VL chat messages: system/assistant as text, user parts as typed blocks.

    A video window becomes a stream-time label and one `video` block holding its frames as PIL
    images with the rate they were sampled at (`sample_fps`), which `qwen_vl_utils` turns into
    the model's frame timestamps.
    """
    out: list[dict[str, Any]] = []
    for m in request.messages:
        if m.role in ("system", "assistant"):
            out.append({"role": m.role, "content": all_text(m.parts)})
            continue
        blocks: list[dict[str, Any]] = []
        for p in m.parts:
            if isinstance(p, TextPart):
                blocks.append({"type": "text", "text": p.text})
            elif isinstance(p, AudioPart):
                raise ConfigError(
                    "Qwen-VL models take no audio; transcribe with the whisper ASR backend, or "
                    "serve an audio-capable model and use it through the openai backend"
                )
            elif isinstance(p, ImagePart):
                block: dict[str, Any] = {"type": "image", "image": jpeg_image(p.jpeg)}
                if params.image_max_pixels:
                    block["max_pixels"] = params.image_max_pixels
                blocks.append(block)
            elif isinstance(p, VideoPart):
                if not p.frames:
                    raise ModelError("a video part of the request has no frames")
                blocks.append({"type": "text", "text": window_label(p)})
                block = {
                    "type": "video",
                    "video": frame_images(p),
                    "sample_fps": round(effective_fps(p), 6),
                }
                if params.video_max_pixels:
                    block["max_pixels"] = params.video_max_pixels
                blocks.append(block)
        out.append({"role": "user", "content": blocks})
    return out


def check_model_type(model_type: str) -> None:
    """`ConfigError` unless `qwen_vl_utils` can build inputs for this model type."""
    if model_type not in QWEN2_TYPES + QWEN3_TYPES:
        raise ConfigError(
            f"the vllm backend builds Qwen-VL inputs; model type {model_type!r} is not one of "
            f"{', '.join(QWEN2_TYPES + QWEN3_TYPES)}. Serve other models with `vllm serve` and "
            "use the openai backend"
        )


def engine_input(
    messages: list[dict[str, Any]],
    processor: Any,
    process_vision_info: Callable[..., Any],
    model_type: str,
) -> dict[str, Any]:
    """A vLLM prompt dict: the chat template's text, the processed media and processor kwargs.

    `processor` supplies `apply_chat_template` and the vision patch size; `process_vision_info`
    is `qwen_vl_utils.process_vision_info` (resizing to the patch grid, padding to an even frame
    count, per-video timing).
    """
    check_model_type(model_type)
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    patch = int(getattr(processor.image_processor, "patch_size", 14))
    images, videos, video_kwargs = process_vision_info(
        messages,
        image_patch_size=patch,
        return_video_kwargs=True,
        return_video_metadata=model_type in QWEN3_TYPES,
    )
    data: dict[str, Any] = {"prompt": prompt}
    media: dict[str, Any] = {}
    if images:
        media["image"] = images
    if videos:
        media["video"] = videos
    if media:
        data["multi_modal_data"] = media
        data["mm_processor_kwargs"] = dict(video_kwargs or {})
    return data


def sampling_settings(sampling: Sampling, params: VllmParams) -> dict[str, Any]:
    """`vllm.SamplingParams` keyword arguments: spec options first, the request's otherwise."""
    temperature = params.temperature if params.temperature is not None else sampling.temperature
    top_p = params.top_p if params.top_p is not None else sampling.top_p
    kwargs: dict[str, Any] = {
        "temperature": temperature,
        "max_tokens": params.max_tokens or sampling.max_tokens,
    }
    if temperature > 0:
        if top_p is not None:
            kwargs["top_p"] = top_p
        if params.top_k is not None:
            kwargs["top_k"] = params.top_k
    if sampling.seed is not None:
        kwargs["seed"] = sampling.seed
    return kwargs


def reply_from_output(output: Any, latency_s: float, model: str) -> Reply:
    """A `Reply` from one `vllm.RequestOutput` (its first completion)."""
    if not output.outputs:
        raise ModelError(f"vllm model {model!r} returned no completion")
    completion = output.outputs[0]
    answer, reasoning = split_reasoning(completion.text or "")
    return Reply(
        text=answer,
        reasoning=reasoning,
        usage={
            "prompt_tokens": len(output.prompt_token_ids or ()),
            "completion_tokens": len(completion.token_ids or ()),
        },
        latency_s=latency_s,
        model=model,
        backend="vllm",
    )


# --------------------------------------------------------------------------- the engine


def _import_engine() -> tuple[Any, Any, Any]:
    """`vllm`, `qwen_vl_utils.process_vision_info` and `transformers`, with an install hint."""
    try:
        import transformers
        import vllm
        from qwen_vl_utils import process_vision_info
    except ImportError as exc:
        raise ConfigError(
            f"the vllm backend needs vllm and qwen-vl-utils ({exc.name} is missing): {INSTALL_HINT}"
        ) from exc
    return vllm, process_vision_info, transformers


@dataclass
class Engine:
    """A started asynchronous vLLM engine, the loop it runs on, and what builds its inputs.

    Shared by every `VllmModel` with the same engine settings: an answerer and a judge on one
    checkpoint differ only in sampling and need one copy of the weights.
    """

    engine: Any  # vllm.AsyncLLMEngine: `generate(prompt, sampling_params, request_id)` streams
    processor: Any
    process_vision_info: Callable[..., Any]
    sampling_params: Callable[..., Any]
    model_type: str
    loop: EngineLoop = field(default_factory=EngineLoop)


_engines: SharedWeights[Engine] = SharedWeights()
_request_ids = itertools.count()
_RUN = uuid.uuid4().hex[:8]  # request ids stay unique across models sharing an engine


async def _final_output(engine: Any, prompt: dict[str, Any], sampling: Any, request_id: str) -> Any:
    """The finished `RequestOutput` of one request (the engine streams partial ones first)."""
    final = None
    async for output in engine.generate(prompt, sampling, request_id):
        final = output
    return final


@dataclass
class _Submitted:
    future: Future[Any]
    started: float
    built_s: float


class VllmModel:
    """A Qwen-VL checkpoint in an in-process vLLM engine; the engine starts on first use."""

    backend = "vllm"
    video_mode = "frames"

    def __init__(self, name: str, params: VllmParams | None = None) -> None:
        self.name = name
        self.params = params or VllmParams()
        self._location = locate(name, "vllm", self.params.revision)
        # A directory is named by its absolute path, so `./model` in two projects never shares
        # cached replies.
        self.model_id = model_id("vllm", self._location, self.params)
        self._engine: Engine | None = None
        self._identity: dict[str, Any] | None = None

    @property
    def identity(self) -> dict[str, Any]:
        """Empty for a checkpoint without steer adapters (its model id says it all), else the
        model id and a hash of the checkpoint's steer (`steer.steer_identity`)."""
        if self._identity is None:
            applied = ""
            folder = self._phase_two_folder()
            if folder is not None:
                from taskmem_lab.backends.steer import read_checkpoint_steer, steer_identity

                applied = steer_identity(read_checkpoint_steer(folder))
            self._identity = {"model_id": self.model_id, "steer": applied} if applied else {}
        return self._identity

    def _phase_two_folder(self) -> Path | None:
        """The checkpoint's folder when its config asks for steer adapters, else None."""
        from taskmem_lab.backends.vllm_steer import needs_plugin

        if is_local(self._location):
            folder: str | None = self._location
        else:
            folder = cached_folder(self._location, self.params.revision)
        if folder is None or not (Path(folder) / "config.json").is_file():
            return None
        config = json.loads((Path(folder) / "config.json").read_text())
        return Path(folder) if needs_plugin(config) else None

    @property
    def engine_key(self) -> tuple[Any, ...]:
        p = self.params
        return (
            self._location,
            p.revision,
            p.tensor_parallel_size,
            p.gpu_memory_utilization,
            p.max_model_len,
            p.max_num_seqs,
            p.max_images,
            p.max_videos,
            p.dtype,
            p.seed,
            p.enforce_eager,
        )

    def load(self) -> Engine:
        """Start the engine now (otherwise the first request does)."""
        if self._engine is None:
            self._engine = _engines.get(self.engine_key, self._start)
        return self._engine

    def close(self) -> None:
        """Forget the engine (freed once no other instance holds it)."""
        _engines.drop(self.engine_key)
        self._engine = None

    def _start(self) -> Engine:
        vllm, process_vision_info, transformers = _import_engine()
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                f"vllm model {self.name!r}: no CUDA GPU is visible; use the hf backend on "
                "CPU, or `vllm serve` on a GPU machine with the openai backend"
            )
        p = self.params
        started = time.perf_counter()
        try:
            config = transformers.AutoConfig.from_pretrained(self._location, revision=p.revision)
            processor = transformers.AutoProcessor.from_pretrained(
                self._location, revision=p.revision
            )
        except (OSError, ValueError, KeyError) as exc:
            raise load_error(self.name, "vllm", exc) from exc
        model_type = str(getattr(config, "model_type", ""))
        check_model_type(model_type)
        if self._phase_two_folder() is not None:
            enable_steer_plugin()
        args = vllm.AsyncEngineArgs(
            model=self._location,
            revision=p.revision,
            tensor_parallel_size=p.tensor_parallel_size,
            gpu_memory_utilization=p.gpu_memory_utilization,
            max_model_len=p.max_model_len,
            max_num_seqs=p.max_num_seqs,
            limit_mm_per_prompt={"image": p.max_images, "video": p.max_videos},
            dtype=p.dtype,
            seed=p.seed,
            enforce_eager=p.enforce_eager,
        )
        loop = EngineLoop(f"taskmem-vllm-{model_type}")
        try:
            # made on the loop it will serve: the engine binds its output handler to it
            engine = loop.call(lambda: vllm.AsyncLLMEngine.from_engine_args(args))
        except (OSError, ValueError) as exc:
            loop.close()
            raise load_error(self.name, "vllm", exc) from exc
        except RuntimeError as exc:  # CUDA out of memory, engine start failure
            loop.close()
            raise ConfigError(
                f"vllm model {self.name!r}: the engine did not start ({exc}); try a smaller "
                "max_model_len, a higher gpu_memory_utilization or more GPUs (tp=N)"
            ) from exc
        log.info(
            "vllm: started %s (%s) in %.1f s", self.name, model_type, time.perf_counter() - started
        )
        return Engine(engine, processor, process_vision_info, vllm.SamplingParams, model_type, loop)

    def _submit(self, engine: Engine, request: Request) -> _Submitted | TaskmemError:
        """Build `request`'s input here (the caller's thread) and hand it to the engine."""
        t0 = time.perf_counter()
        try:
            messages = qwen_messages(request, self.params)
            data = engine_input(
                messages, engine.processor, engine.process_vision_info, engine.model_type
            )
        except TaskmemError as exc:
            return exc
        except (ValueError, TypeError) as exc:  # qwen_vl_utils rejects the media
            return ModelError(f"vllm model {self.name!r}: cannot build input ({exc})")
        sampling = engine.sampling_params(**sampling_settings(request.sampling, self.params))
        request_id = f"taskmem-{_RUN}-{next(_request_ids)}"
        started = time.perf_counter()
        future = engine.loop.submit(_final_output(engine.engine, data, sampling, request_id))
        return _Submitted(future, started, started - t0)

    def _collect(self, submitted: _Submitted | TaskmemError) -> Reply | TaskmemError:
        """The reply of a submitted request, or its error (never another request's)."""
        if isinstance(submitted, TaskmemError):
            return submitted
        try:
            output = submitted.future.result()
        except (ValueError, RuntimeError) as exc:  # too long for max_model_len, engine errors
            return ModelError(f"vllm model {self.name!r}: generation failed ({exc})")
        if output is None:
            return ModelError(f"vllm model {self.name!r}: the engine returned no output")
        latency = time.perf_counter() - submitted.started + submitted.built_s
        try:
            return reply_from_output(output, latency, self.name)
        except ModelError as exc:
            return exc

    def generate_many(
        self, requests: Sequence[Request], return_exceptions: bool = False
    ) -> list[Any]:
        """Replies for many requests, all in the engine at once.

        A request that cannot be built or run does not sink the others: with
        `return_exceptions` its error takes its place in the list; otherwise a `ModelError`
        naming the failed positions is raised after every request has run.
        """
        engine = self.load()
        outcomes = [self._collect(s) for s in [self._submit(engine, r) for r in requests]]
        if return_exceptions:
            return outcomes
        failed = [(i, r) for i, r in enumerate(outcomes) if isinstance(r, TaskmemError)]
        if failed:
            detail = "; ".join(f"#{i}: {err}" for i, err in failed[:3])
            raise ModelError(f"{len(failed)} of {len(requests)} requests failed ({detail})")
        return outcomes

    def generate(self, request: Request) -> Reply:
        """One reply; concurrent callers (one per stream) share the engine's running batch."""
        outcome = self._collect(self._submit(self.load(), request))
        if isinstance(outcome, TaskmemError):
            raise outcome
        return outcome


def enable_steer_plugin() -> None:
    """Register the `taskmem_steer` plugin here and in the engine's worker processes.

    Workers load the general plugins that `VLLM_PLUGINS` allows (all when it is unset), so a
    list that leaves ours out gets it added.
    """
    from taskmem_lab.backends import vllm_steer

    vllm_steer.register()
    allowed = os.environ.get("VLLM_PLUGINS")
    if allowed is not None and vllm_steer.PLUGIN_NAME not in allowed.split(","):
        os.environ["VLLM_PLUGINS"] = ",".join(
            p for p in (*allowed.split(","), vllm_steer.PLUGIN_NAME) if p
        )
    log.info("vllm: steer adapters on (plugin %s)", vllm_steer.PLUGIN_NAME)


def from_spec(name: str) -> VllmModel:
    """`vllm:<hub-id-or-directory>[?options]`."""
    base, options = split_options(name)
    if not base:
        raise ConfigError(f"model spec 'vllm:{name}' names no model before '?'")
    params = params_from_options(VllmParams, options, f"vllm:{name}", ALIASES)
    return VllmModel(base, params)

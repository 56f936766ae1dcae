"""`hf`: small local vision-language models through transformers, on CPU or GPU.

Floor 2. Spec `hf:<hub-id-or-directory>[?key=value&...]`, for example
`hf:HuggingFaceTB/SmolVLM2-256M-Video-Instruct` (the default small model for CPU demos, also what
`hf:?options` with no name loads) or `hf:/models/smol?max_new_tokens=256&dtype=float32`. The
model is `AutoModelForImageTextToText` with the checkpoint's `AutoProcessor`; its chat template
turns a `Request` into token ids and pixels. A video window goes to the processor's video input
when the processor has one (`video=auto|native`), otherwise as one image per frame, each after a
`Frame at HH:MM:SS` line, as `openai_compat` sends frames. Weights load on the first request (a
response-cache hit never loads them); `<think>` reasoning is split from the answer; usage and
latency are recorded like `openai_compat`.

Steer adapters (`backends.steer`, TaskMem's Phase Two): `?steer=FILE` adds a steer file's vectors
to the decoder layers' outputs, `steer_layers=22,23` picks rows (default: every non-zero row) and
`steer_scale=1.5` multiplies them (default 1). A Phase-Two checkpoint (`adapter_layers` in its text
config, `...layers.<i>.adapter.steer` weights) applies its own steer unless a file replaces it;
`steer_scale=0` runs it without. The weights are shared by steered and unsteered models of one
checkpoint: hooks go on for one generation at a time. The steer actually applied is part of the
model's `identity`, so runs and the response cache tell steered replies from unsteered ones.

Needs the `hf` extra: `pip install taskmem_lab[hf]`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import threading
import time
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
    split_reasoning,
)
from taskmem_lab.backends.options import (
    check_option,
    model_id,
    params_from_options,
    split_options,
)
from taskmem_lab.backends.steer import (
    SteerSpec,
    attach_steer,
    effective_steer,
    load_steer,
    nonzero_layers,
    parse_layers,
    read_checkpoint_steer,
    steer_identity,
    text_config_dict,
)
from taskmem_lab.backends.visual import (
    frame_images,
    frame_label,
    frame_offsets,
    jpeg_image,
    window_label,
)
from taskmem_lab.backends.weights import (
    SharedWeights,
    cached_folder,
    is_local,
    load_error,
    locate,
)
from taskmem_lab.errors import ConfigError, ModelError, SteerError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "HuggingFaceTB/SmolVLM2-256M-Video-Instruct"
INSTALL_HINT = "pip install taskmem_lab[hf]"
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "float16", "bfloat16")
VIDEO_MODES = ("auto", "native", "images")


@dataclass(frozen=True)
class HFParams:
    """Options of the `hf` backend, set in the spec after `?`.

    Sampling options override what a request asks for; left unset (`none`) they follow it.

    Attributes:
        device: `auto` (cuda, then mps, then cpu), `cpu`, `cuda`, `cuda:N` or `mps`.
        dtype: `auto` (bfloat16/float16 on GPU, float32 on CPU) or a torch dtype name.
        max_new_tokens: completion budget per call (default: the request's `max_tokens`).
        temperature: sampling temperature; 0 is greedy (default: the request's).
        top_p: nucleus sampling mass (default: the request's, if any).
        top_k: sample from the k most likely tokens (default: the model's generation config).
        repetition_penalty: >1 discourages repeats (default: the model's generation config).
        video: `auto` (the processor's video input when it has one), `native`, or `images`.
        attn_implementation: e.g. `sdpa`, `eager`, `flash_attention_2` (default: transformers').
        revision: hub branch, tag or commit to load.
        steer: a steer file (`{"matrix": [num_layers, hidden]}`) to add to the decoder layers'
            outputs, replacing a Phase-Two checkpoint's own steer (default: that one, if any).
        steer_layers: comma-separated decoder layers to steer (default: every non-zero row).
        steer_scale: multiplies the steer vectors (0 turns a checkpoint's own steer off).
    """

    device: str = "auto"
    dtype: str = "auto"
    max_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    video: str = "auto"
    attn_implementation: str | None = None
    revision: str | None = None
    steer: str | None = None
    steer_layers: str | None = None
    steer_scale: float = 1.0

    def __post_init__(self) -> None:
        name = type(self).__name__
        check_option(
            self.steer_scale == self.steer_scale and abs(self.steer_scale) != float("inf"),
            name,
            "steer_scale",
            f"must be a finite number, got {self.steer_scale}",
        )
        if self.steer_layers is not None:
            try:
                parse_layers(self.steer_layers)
            except SteerError as exc:
                check_option(False, name, "steer_layers", str(exc))
        check_option(
            self.device in DEVICES or self.device.startswith("cuda:"),
            name,
            "device",
            f"must be one of {', '.join(DEVICES)} or cuda:N, got {self.device!r}",
        )
        check_option(
            self.dtype in DTYPES,
            name,
            "dtype",
            f"must be one of {', '.join(DTYPES)}, got {self.dtype!r}",
        )
        check_option(
            self.max_new_tokens is None or self.max_new_tokens >= 1,
            name,
            "max_new_tokens",
            f"must be >= 1, got {self.max_new_tokens}",
        )
        check_option(
            self.temperature is None or self.temperature >= 0,
            name,
            "temperature",
            f"must be >= 0, got {self.temperature}",
        )
        check_option(
            self.top_p is None or 0 < self.top_p <= 1,
            name,
            "top_p",
            f"must be in (0, 1], got {self.top_p}",
        )
        check_option(
            self.top_k is None or self.top_k >= 1, name, "top_k", f"must be >= 1, got {self.top_k}"
        )
        check_option(
            self.repetition_penalty is None or self.repetition_penalty > 0,
            name,
            "repetition_penalty",
            f"must be > 0, got {self.repetition_penalty}",
        )
        check_option(
            self.video in VIDEO_MODES,
            name,
            "video",
            f"must be one of {', '.join(VIDEO_MODES)}, got {self.video!r}",
        )


# --------------------------------------------------------------------------- pure conversion


def video_metadata(part: VideoPart) -> dict[str, Any]:
    """Timing of a window for a processor's video input: frame indices on the `part.fps` grid.

    Frames are sampled on the stream's global `n / fps` grid (thinning keeps a subset), so the
    offsets times `fps` are whole numbers and the processor's timestamps (`index / fps`) are exact,
    relative to the window's first frame.
    """
    indices = [round(t * part.fps) for t in frame_offsets(part)]
    total = (indices[-1] + 1) if indices else 0
    return {
        "total_num_frames": total,
        "fps": part.fps,
        "frames_indices": indices,
        "duration": total / part.fps if part.fps > 0 else 0.0,
    }


def chat_messages(
    request: Request, native_video: bool, audio_rate: int | None = None
) -> tuple[list[dict[str, Any]], list[dict]]:
    """Transformers chat messages for a request, and the metadata of each native video.

    Every role gets a list of typed blocks, as processor chat templates expect. With
    `native_video` a window becomes a stream-time label and one `video` block (frames as PIL
    images); without, one `image` block per frame after a `Frame at HH:MM:SS.s` text block.
    Audio goes as float samples to processors that take audio (`audio_rate`, their sampling
    rate); any other model gets a `ConfigError` instead of a request with the audio left out.
    """
    messages: list[dict[str, Any]] = []
    metadata: list[dict[str, Any]] = []
    for m in request.messages:
        blocks: list[dict[str, Any]] = []
        for p in m.parts:
            if isinstance(p, TextPart):
                blocks.append({"type": "text", "text": p.text})
            elif isinstance(p, ImagePart):
                blocks.append({"type": "image", "image": jpeg_image(p.jpeg)})
            elif isinstance(p, AudioPart):
                blocks.append({"type": "audio", "audio": _audio_samples(p, audio_rate)})
            elif isinstance(p, VideoPart) and native_video:
                blocks.append({"type": "text", "text": window_label(p)})
                blocks.append({"type": "video", "video": frame_images(p)})
                metadata.append(video_metadata(p))
            elif isinstance(p, VideoPart):
                for frame, image in zip(p.frames, frame_images(p), strict=True):
                    blocks.append({"type": "text", "text": frame_label(frame.time)})
                    blocks.append({"type": "image", "image": image})
        messages.append({"role": m.role, "content": blocks})
    return messages, metadata


def _audio_samples(part: AudioPart, audio_rate: int | None) -> Any:
    from taskmem_lab.media.audio import read_wav

    if audio_rate is None:
        raise ConfigError(
            "this hf model's processor takes no audio; transcribe with the whisper ASR backend "
            "or pick an audio-capable model"
        )
    samples, rate = read_wav(part.wav)
    if rate != audio_rate:
        raise ConfigError(
            f"audio is {rate} Hz but the model's processor expects {audio_rate} Hz; "
            "resample it before building the request"
        )
    return samples


def generation_settings(sampling: Sampling, params: HFParams) -> tuple[dict[str, Any], int | None]:
    """`model.generate` keyword arguments and the seed, from the request and the spec options."""
    temperature = params.temperature if params.temperature is not None else sampling.temperature
    top_p = params.top_p if params.top_p is not None else sampling.top_p
    kwargs: dict[str, Any] = {
        "max_new_tokens": params.max_new_tokens or sampling.max_tokens,
        "do_sample": temperature > 0,
    }
    if temperature > 0:
        kwargs["temperature"] = temperature
        if top_p is not None:
            kwargs["top_p"] = top_p
        if params.top_k is not None:
            kwargs["top_k"] = params.top_k
    if params.repetition_penalty is not None:
        kwargs["repetition_penalty"] = params.repetition_penalty
    return kwargs, (sampling.seed if temperature > 0 else None)


# --------------------------------------------------------------------------- the model


def _import_torch_transformers() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise ConfigError(
            f"the hf backend needs torch and transformers ({exc.name} is missing): {INSTALL_HINT}"
        ) from exc
    return torch, transformers


def pick_device(torch: Any, device: str) -> str:
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(torch: Any, dtype: str, device: str) -> Any:
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        return torch.float16
    return torch.float32


def _missing_package(name: str, exc: ImportError) -> str:
    """What to install when a checkpoint's processor or model needs an optional package."""
    text = " ".join(str(exc).split())
    if "torchvision" in text.lower():
        return (
            f"hf model {name!r}: its processor has a video part, and transformers' video "
            "processors need torchvision: install the torchvision build matching your torch "
            "(CPU wheels: pip install torchvision --index-url https://download.pytorch.org/whl/cpu)"
        )
    return f"hf model {name!r} needs a package that is missing ({text[:200]}); {INSTALL_HINT}"


@dataclass
class Loaded:
    """Weights and processor in memory, shared by every `HFModel` with the same load settings."""

    model: Any
    processor: Any
    torch: Any
    device: str
    native_video: bool
    audio_rate: int | None
    lock: threading.Lock = field(default_factory=threading.Lock)  # one generation at a time


_loaded: SharedWeights[Loaded] = SharedWeights()


class HFModel:
    """A transformers image-text-to-text model; loads on first use, one generation at a time.

    Instances that differ only in generation options (an answerer and a judge on one checkpoint)
    share one copy of the weights.
    """

    backend = "hf"
    video_mode = "frames"

    def __init__(self, name: str, params: HFParams | None = None) -> None:
        self.name = name
        params = params or HFParams()
        if params.steer:  # named by its absolute path, as a model directory is
            params = dataclasses.replace(params, steer=_steer_file(params.steer))
        self.params = params
        self.steer_spec = SteerSpec(
            params.steer, parse_layers(params.steer_layers), params.steer_scale
        )
        self._location = locate(name, "hf", self.params.revision)
        # A directory is named by its absolute path, so `./model` in two projects never shares
        # cached replies.
        self.model_id = model_id("hf", self._location, self.params)
        self._loaded: Loaded | None = None
        self._steer: tuple[Any] | None = None  # (the applied steer or None,) once resolved

    @property
    def identity(self) -> dict[str, Any]:
        """What answers: empty for an unsteered model (its model id says it all), else the model
        id and a hash of the steer actually applied (`steer.steer_identity`)."""
        applied = self.applied_steer()
        if applied is None:
            return {}
        return {"model_id": self.model_id, "steer": steer_identity(applied)}

    def applied_steer(self) -> Any | None:
        """The steer this model adds, `[num_layers, hidden]` float32 (chosen rows, scaled), or
        None. Read from the steer file or the checkpoint's own weights, never the whole model."""
        if self._steer is None:
            self._steer = (self._resolve_steer(),)
        return self._steer[0]

    def _resolve_steer(self) -> Any | None:
        spec = self.steer_spec
        folder = self._checkpoint_dir()
        if spec.file:
            matrix = load_steer(spec.file)
        else:
            matrix = read_checkpoint_steer(folder) if folder is not None else None
            if matrix is None:
                if not spec.is_default:
                    raise ConfigError(
                        f"hf model {self.name!r}: steer_layers/steer_scale are set but there is "
                        "no steer: give steer=FILE, or load a Phase-Two checkpoint"
                    )
                return None
        if folder is not None:
            _check_steer_shape(matrix, folder, self.name)
        applied = effective_steer(matrix, spec.layers, spec.scale)
        return applied if bool((applied != 0).any()) else None

    def _checkpoint_dir(self) -> Path | None:
        """The checkpoint's folder on disk (a hub id: its cached snapshot, loading it if needed)."""
        if is_local(self._location):
            return Path(self._location)
        found = cached_folder(self._location, self.params.revision)
        if found is None:
            self.load()
            found = cached_folder(self._location, self.params.revision)
        return Path(found) if found else None

    def _steered(self, loaded: Loaded) -> contextlib.AbstractContextManager[Any]:
        """Steer hooks on the shared weights for one generation (nothing when unsteered)."""
        applied = self.applied_steer()
        if applied is None:
            return contextlib.nullcontext()
        matrix = applied.to(device=loaded.device, dtype=loaded.model.dtype)
        return attach_steer(loaded.model, matrix, layers=nonzero_layers(applied))

    @property
    def load_key(self) -> tuple[Any, ...]:
        p = self.params
        return (self._location, p.device, p.dtype, p.video, p.attn_implementation, p.revision)

    @property
    def native_video(self) -> bool:
        return self.load().native_video

    def load(self) -> Loaded:
        """Load weights and processor now (otherwise the first request does)."""
        if self._loaded is None:
            self._loaded = _loaded.get(self.load_key, self._load)
        return self._loaded

    def close(self) -> None:
        """Forget the weights (freed once no other instance holds them)."""
        _loaded.drop(self.load_key)
        self._loaded = None

    def _load(self) -> Loaded:
        torch, transformers = _import_torch_transformers()
        device = pick_device(torch, self.params.device)
        dtype = pick_dtype(torch, self.params.dtype, device)
        major = int(transformers.__version__.split(".")[0])
        kwargs: dict[str, Any] = {"dtype" if major >= 5 else "torch_dtype": dtype}
        if self.params.revision:
            kwargs["revision"] = self.params.revision
        if self.params.attn_implementation:
            kwargs["attn_implementation"] = self.params.attn_implementation
        started = time.perf_counter()
        try:
            processor = transformers.AutoProcessor.from_pretrained(
                self._location, revision=self.params.revision
            )
            model = transformers.AutoModelForImageTextToText.from_pretrained(
                self._location, **kwargs
            )
        except ImportError as exc:
            raise ConfigError(_missing_package(self.name, exc)) from exc
        except (OSError, ValueError, KeyError) as exc:
            raise load_error(self.name, "hf", exc) from exc
        if getattr(processor, "chat_template", None) is None:
            raise ConfigError(
                f"hf model {self.name!r}: its processor has no chat template, so requests cannot "
                "be formatted; use an instruction-tuned checkpoint"
            )
        has_video = getattr(processor, "video_processor", None) is not None
        if self.params.video == "native" and not has_video:
            raise ConfigError(
                f"hf model {self.name!r}: video=native, but its processor "
                f"({type(processor).__name__}) has no video input; use video=images"
            )
        extractor = getattr(processor, "feature_extractor", None)
        loaded = Loaded(
            model=model.to(device).eval(),
            processor=processor,
            torch=torch,
            device=device,
            native_video=has_video and self.params.video != "images",
            audio_rate=getattr(extractor, "sampling_rate", None) if extractor else None,
        )
        log.info(
            "hf: loaded %s on %s (%s) in %.1f s; video as %s",
            self.name,
            device,
            dtype,
            time.perf_counter() - started,
            "native video" if loaded.native_video else "images",
        )
        return loaded

    def _inputs(self, loaded: Loaded, request: Request) -> Any:
        try:
            inputs = encode_request(loaded, request)
        except ModelError as exc:
            raise ModelError(f"hf model {self.name!r}: {exc}") from exc
        return inputs.to(loaded.device, dtype=loaded.model.dtype)

    def generate(self, request: Request) -> Reply:
        loaded = self.load()
        with loaded.lock:
            started = time.perf_counter()  # latency covers input processing, as a server's does
            inputs = self._inputs(loaded, request)
            kwargs, seed = generation_settings(request.sampling, self.params)
            torch = loaded.torch
            if seed is not None:
                torch.manual_seed(seed)
            prompt_len = int(inputs["input_ids"].shape[1])
            try:
                with self._steered(loaded), torch.inference_mode():
                    out = loaded.model.generate(**inputs, **kwargs)
            except (RuntimeError, ValueError) as exc:  # e.g. out of memory, context too long
                raise ModelError(f"hf model {self.name!r}: generation failed ({exc})") from exc
            latency = time.perf_counter() - started
            new = out[0, prompt_len:]
            tokenizer = loaded.processor.tokenizer
            if (
                tokenizer.pad_token_id is not None
                and tokenizer.pad_token_id != tokenizer.eos_token_id
            ):
                new = new[new != tokenizer.pad_token_id]
            text = tokenizer.decode(new, skip_special_tokens=True)
        answer, reasoning = split_reasoning(text)
        return Reply(
            text=answer,
            reasoning=reasoning,
            usage={"prompt_tokens": prompt_len, "completion_tokens": int(new.shape[0])},
            latency_s=latency,
            model=self.name,
            backend=self.backend,
        )


def _steer_file(path: str) -> str:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"hf option steer: steer file not found: {p}")
    return str(p.resolve())


def _check_steer_shape(matrix: Any, folder: Path, name: str) -> None:
    """`SteerError` unless the steer is `[num_hidden_layers, hidden_size]` of the checkpoint."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        return
    text = text_config_dict(json.loads(config_path.read_text()))
    want = (text.get("num_hidden_layers"), text.get("hidden_size"))
    if None not in want and tuple(matrix.shape) != want:
        raise SteerError(
            f"hf model {name!r}: steer shape {tuple(matrix.shape)} does not fit it: it has "
            f"{want[0]} decoder layers of hidden size {want[1]}"
        )


def base_folder(spec: str) -> Path:
    """The checkpoint folder on disk of an `hf:DIR` or cached `hf:HUB_ID` spec (no options)."""
    prefix, _, name = spec.partition(":")
    base, options = split_options(name)
    if prefix != "hf" or not base:
        raise ConfigError(f"expected a checkpoint as hf:DIR or hf:HUB_ID, got {spec!r}")
    if options:
        raise ConfigError(f"{spec!r}: give the base checkpoint alone, without ?{'&'.join(options)}")
    location = locate(base, "hf")
    found = location if is_local(location) else cached_folder(location)
    if found is None:
        raise ConfigError(
            f"hf model {base!r} is not in the local Hugging Face cache; download it first "
            f"(`hf download {base}`) or pass its folder as hf:/path/to/model"
        )
    return Path(found)


def from_spec(name: str) -> HFModel:
    """`hf:<hub-id-or-directory>[?options]`; no name before `?` means the default small model."""
    base, options = split_options(name)
    params = params_from_options(HFParams, options, f"hf:{name}")
    return HFModel(base or DEFAULT_MODEL, params)


def encode_request(loaded: Loaded, request: Request) -> Any:
    """The model's inputs for `request` (on the CPU), built as every `hf` generation builds them;
    `training.adapt` encodes preference pairs with it so training sees the served prompt.

    Raises `ModelError` when the processor rejects the request.
    """
    messages, metadata = chat_messages(request, loaded.native_video, loaded.audio_rate)
    extra: dict[str, Any] = {}
    if metadata:
        # Frames are already sampled: the processor must not sample again, and it needs the
        # timing to print frame timestamps.
        extra = {"do_sample_frames": False, "video_metadata": metadata}
    try:
        return loaded.processor.apply_chat_template(
            messages,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            **extra,
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelError(f"the processor rejected the request ({exc})") from exc

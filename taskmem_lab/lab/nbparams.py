"""Parameters of the stage notebooks: one frozen dataclass per notebook, field for field.

Floor 7 (lab). Each notebook's tagged `parameters` cell declares exactly these fields, with the same
types and defaults (a test checks it). Both doors use the same checking code: `taskmem
reproduce -p` builds the parameters with `coerce`, and the notebook's next cell builds them with
`from_namespace` (so Run All in JupyterLab and papermill agree): `"false"` is False, `"1,2"` is a
list, an unknown name is an error, and a missing input names the path it looked for. Paths are
made absolute through `taskmem_lab.paths`, never through the kernel's working directory. Model
settings name endpoints or specs, never keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from typing import Any

from taskmem_lab.errors import ConfigError
from taskmem_lab.params import MemorizeParams
from taskmem_lab.paths import input_path, output_path
from taskmem_lab.perception.params import PerceptionChoices

# Field metadata: how `resolve` treats a path parameter ("" always means "not given").
INPUT = {"path": "input"}  # must exist: as given, else under the repository root
OUTPUT = {"path": "output"}  # relative paths are taken against the repository root


@dataclass(frozen=True)
class AudioNotebook:
    video: str = field(default="", metadata=INPUT)  # video file; "" makes a generated sample
    asr_backend: str = PerceptionChoices.asr_backend  # whisper | vlm
    asr_model: str = PerceptionChoices.asr_model  # whisper name or CTranslate2 dir; VLM spec
    speaker_model: str = "fake"  # model spec matching speakers to faces (03: its memorizer)
    end: float = 60.0  # seconds of the stream to transcribe
    out: str = field(default="runs", metadata=OUTPUT)  # runs root
    figures: str = field(default="runs/figures", metadata=OUTPUT)  # figures and tables


@dataclass(frozen=True)
class FacesNotebook:
    video: str = field(default="", metadata=INPUT)  # video file; "" makes a generated sample
    face_backend: str = PerceptionChoices.face_backend  # dlib | insightface
    face_fps: float = 2.0  # frames per second searched for faces
    min_cluster_size: int = PerceptionChoices.min_cluster_size  # HDBSCAN min cluster size
    speaker_model: str = "fake"  # model spec matching speakers to faces (03: its memorizer)
    end: float = 60.0  # seconds of the stream to process
    out: str = field(default="runs", metadata=OUTPUT)  # runs root
    figures: str = field(default="runs/figures", metadata=OUTPUT)  # figures and tables


@dataclass(frozen=True)
class EpisodicNotebook:
    video: str = field(default="", metadata=INPUT)  # video or stream manifest; "" = sample
    model: str = "fake"  # model spec: fake, openai:NAME, hf:ID, vllm:ID
    tag: str = "notebook"  # name of the memory
    interval: float = MemorizeParams.interval  # seconds of new video per clip
    context_duration: float = MemorizeParams.context_duration  # seconds the model sees per clip
    end: float = 60.0  # stream time to stop at, 0 for the whole stream
    faces: bool = True  # run face perception
    asr: bool = True  # run speech recognition
    face_fps: float = 2.0  # frames per second searched for faces
    out: str = field(default="runs", metadata=OUTPUT)  # runs root
    figures: str = field(default="runs/figures", metadata=OUTPUT)  # figures and tables


@dataclass(frozen=True)
class QaNotebook:
    benchmarks: list[str] = field(default_factory=lambda: ["videomme", "egolife", "egotempo"])
    sources: list[str] = field(default_factory=list)  # one per benchmark; [] = samples
    memories: str = field(default="runs", metadata=OUTPUT)  # runs root with the memories
    tag: str = "notebook"  # memory tag to evaluate
    answerer: str = "fake:reader"  # model spec of the answerer
    judge: str = "fake"  # model spec of the free-form judge
    context: str = "full"  # full | evidence | retrieval
    num_samples: int = 1  # answers per question, majority vote
    stand_in: bool = True  # smoke only: memorize generated stand-ins for missing memories
    videos: list[str] = field(default_factory=list)  # one video folder per benchmark: memorize
    model: str = "fake"  # memorizer model spec for the benchmarks given `videos`
    tasks: str = "none"  # none | questions: online tasks while memorizing from `videos`
    limit_streams: int = 0  # memorize only the first N streams from `videos` (0: all)
    attribute: str = "evidence"  # none | evidence | memory: why wrong answers failed
    compare_tags: list[str] = field(default_factory=list)  # more memory tags in the error split
    second_judge: str = ""  # re-judge free-form answers: agreement and kappa ("": no)
    figures: str = field(default="runs/figures", metadata=OUTPUT)  # figures and tables

    def __post_init__(self) -> None:
        from taskmem_lab.evaluation.attribution import MODES

        if self.attribute not in MODES:
            raise ConfigError(f"attribute must be one of {MODES}, got {self.attribute!r}")


@dataclass(frozen=True)
class AblationsNotebook:
    video: str = field(default="", metadata=INPUT)  # video file; "" makes a generated sample
    models: list[str] = field(default_factory=lambda: ["fake"])  # memorizer model specs
    intervals: list[float] = field(default_factory=lambda: [10.0])  # clip intervals (s)
    context_durations: list[float] = field(default_factory=lambda: [30.0, 50.0])  # seconds
    faces: list[bool] = field(default_factory=lambda: [False])  # face perception off/on
    asr: list[bool] = field(default_factory=lambda: [False, True])  # ASR off/on
    tasks: list[bool] = field(default_factory=lambda: [False, True])  # task stream off/on
    face_fps: float = 2.0  # frames per second searched for faces when faces are on
    answerer: str = "fake:reader"  # model spec that answers the sample questions
    end: float = 60.0  # stream time to stop at
    out: str = field(default="runs", metadata=OUTPUT)  # runs root
    figures: str = field(default="runs/figures", metadata=OUTPUT)  # figures and tables


@dataclass(frozen=True)
class PaperNotebook:
    results: str = field(default="runs/results", metadata=INPUT)  # 04's *.metrics.json files
    reported: str = field(default="benchmarks/paper_results.csv", metadata=INPUT)  # paper table
    compare_to: str = "TaskMem"  # reported system the deltas are taken against
    figures: str = field(default="runs/figures", metadata=OUTPUT)  # figures and tables


@dataclass(frozen=True)
class AdaptNotebook:
    model: str = ""  # hf: spec of the frozen base memorizer; "" = the tiny trained one (smoke)
    end: float = 24.0  # seconds of the sample talk to memorize
    frame_fps: float = 0.5  # frames per second the memorizer sees
    rollouts: int = 8  # sampled candidate entries per clip
    temperature: float = 0.7  # sampling temperature of the rollouts
    judge: str = "fake"  # text and pairwise judge spec
    video_judge: str = "fake"  # video judge spec
    layers: list[int] = field(default_factory=lambda: [1])  # decoder layers with a steer
    steps: int = 20  # DPO steps
    lr: float = 0.2  # learning rate of the steer
    beta: float = 0.1  # DPO's KL coefficient
    answerer: str = "fake:reader"  # model spec that answers the sample questions
    out: str = field(default="runs", metadata=OUTPUT)  # runs root
    figures: str = field(default="runs/figures", metadata=OUTPUT)  # figures and tables


NOTEBOOK_PARAMS: dict[str, type] = {
    "01_audio": AudioNotebook,
    "02_faces": FacesNotebook,
    "03_episodic": EpisodicNotebook,
    "04_qa": QaNotebook,
    "05_ablations": AblationsNotebook,
    "06_paper": PaperNotebook,
    "07_adapt": AdaptNotebook,
}


def default_of(f: Field) -> Any:
    """A field's default value (calling its factory for list fields)."""
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    raise ConfigError(f"parameter {f.name} has no default")


def coerce(cls: type, values: Mapping[str, Any]) -> Any:
    """An instance of a notebook's params from strings or values; unknown names are an error."""
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown parameter(s) {', '.join(unknown)} for {cls.__name__}; known: {', '.join(known)}"
        )
    out: dict[str, Any] = {}
    for name, value in values.items():
        kind = str(known[name].type)
        try:
            out[name] = _convert(kind, value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"parameter {name!r}: cannot read {value!r} as {kind}") from exc
    return cls(**out)


def from_namespace(cls: type, namespace: Mapping[str, Any]) -> Any:
    """The notebook's parameters from the kernel's variables, checked like `-p` and resolved.

    Call it in the cell after the parameters cell with `globals()`: each field is taken by name
    (after papermill's injected cell, if any), a name annotated in the parameters cell that is not
    a field is an error, and paths are made absolute (`resolve`).
    """
    known = [f.name for f in fields(cls)]
    annotated = set(namespace.get("__annotations__", {}))
    unknown = sorted(annotated - set(known) - {"nb"})
    if unknown:
        raise ConfigError(
            f"unknown parameter(s) {', '.join(unknown)} in the parameters cell of "
            f"{cls.__name__}; known: {', '.join(known)}"
        )
    missing = [name for name in known if name not in namespace]
    if missing:
        raise ConfigError(
            f"parameter(s) {', '.join(missing)} not defined: run the parameters cell first"
        )
    return resolve(coerce(cls, {name: namespace[name] for name in known}))


def resolve(params: Any) -> Any:
    """The same parameters with every path absolute: inputs must exist (the error names the
    path), outputs are taken against the repository root when relative."""
    changes: dict[str, Any] = {}
    for f in fields(params):
        kind = f.metadata.get("path")
        value = getattr(params, f.name)
        if not kind or not value:
            continue
        if kind == "input":
            changes[f.name] = str(input_path(value, f"{type(params).__name__}.{f.name}"))
        else:
            changes[f.name] = str(output_path(value))
    return replace(params, **changes)


_SCALARS = {"bool", "int", "float", "str"}


def _unquoted(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _convert(kind: str, value: Any) -> Any:
    if kind.startswith("list[") and kind.endswith("]"):
        inner = kind[5:-1]
        if isinstance(value, str):
            # `a,b`, `[a, b]` and `["a", "b"]` (how a list is typed on a command line) all read
            # as the two items
            text = value.strip()
            if text.startswith("[") and text.endswith("]"):
                text = text[1:-1]
            items: list[Any] = [_unquoted(v.strip()) for v in text.split(",") if v.strip()]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise TypeError(value)
        return [_convert(inner, v) for v in items]
    if kind not in _SCALARS:
        raise TypeError(f"unsupported parameter type {kind}")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        low = str(value).strip().lower()
        if low not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            raise ValueError(value)
        return low in ("true", "1", "yes", "on")
    if kind == "int":
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(value)
        return int(value)
    if kind == "float":
        if isinstance(value, bool):
            raise ValueError(value)
        return float(value)
    if not isinstance(value, str):
        raise TypeError(value)
    return value


def shared_perception(
    faces: bool = True,
    asr: bool = True,
    audio: AudioNotebook | None = None,
    face: FacesNotebook | None = None,
    face_fps: float | None = None,
    speaker_model: str | None = None,
) -> Any:
    """The perception settings 01, 02 and 03 share: faces and speech with the same settings, so
    the stage (cached by its settings, the speaker-matching model included) runs once per video
    and the later notebooks read it back. Settings not given come from the other notebook's
    defaults."""
    from taskmem_lab.perception.perceiver import perception_params

    audio = audio or AudioNotebook()
    face = face or FacesNotebook()
    choices = PerceptionChoices(
        face_backend=face.face_backend,
        face_fps=face_fps if face_fps is not None else face.face_fps,
        min_cluster_size=face.min_cluster_size,
        asr_backend=audio.asr_backend,
        asr_model=audio.asr_model,
        speaker_model=speaker_model or audio.speaker_model,
    )
    return perception_params(faces, asr, choices)

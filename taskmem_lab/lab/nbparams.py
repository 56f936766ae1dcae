"""Parameters of the stage notebooks: one frozen dataclass per notebook, field for field.

Floor 7 (lab). Each notebook's tagged `parameters` cell declares exactly these fields, with the
same types and defaults (a test checks it), and the next cell builds the dataclass from the
cell's names with `from_cell` (by field name, never by position); `taskmem reproduce` validates
overrides against them, so an unknown or mistyped parameter is an error rather than papermill's
warning. Defaults that are also a stage's defaults are taken from that stage's dataclass; list
parameters are lists. Model settings name endpoints or specs, never keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING as _MISSING
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

import yaml

from taskmem_lab.errors import ConfigError
from taskmem_lab.evaluation.qa import QAParams
from taskmem_lab.params import MemorizeParams
from taskmem_lab.perception.params import PerceptionChoices

T = TypeVar("T")
_DEFAULT_BENCHMARKS = ["videomme", "egolife", "egotempo"]


@dataclass(frozen=True)
class AudioNotebook:
    video: str = ""  # video file; "" makes a generated sample with speech
    asr_backend: str = PerceptionChoices.asr_backend  # whisper | vlm
    asr_model: str = (
        PerceptionChoices.asr_model
    )  # whisper name or CTranslate2 dir; VLM spec for vlm
    end: float = 60.0  # seconds of the stream to transcribe
    out: str = "runs"  # runs root
    figures: str = "figures"  # where figures and tables go


@dataclass(frozen=True)
class FacesNotebook:
    video: str = ""  # video file; "" makes a generated sample with faces
    face_backend: str = PerceptionChoices.face_backend  # dlib | insightface
    face_fps: float = PerceptionChoices.face_fps  # frames per second searched for faces
    min_cluster_size: int = PerceptionChoices.min_cluster_size  # HDBSCAN minimum cluster size
    end: float = 60.0  # seconds of the stream to process
    out: str = "runs"  # runs root
    figures: str = "figures"  # where figures and tables go


@dataclass(frozen=True)
class EpisodicNotebook:
    video: str = ""  # video file or stream manifest; "" makes a generated sample
    model: str = "fake"  # model spec: fake, openai:NAME, hf:ID, vllm:ID
    tag: str = "notebook"  # name of the memory
    interval: float = MemorizeParams.interval  # seconds of new video per clip
    context_duration: float = MemorizeParams.context_duration  # seconds the model sees per clip
    end: float = 60.0  # stream time to stop at, 0 for the whole stream
    faces: bool = False  # run face perception
    asr: bool = False  # run speech recognition
    face_fps: float = PerceptionChoices.face_fps  # frames per second searched for faces
    out: str = "runs"  # runs root
    figures: str = "figures"  # where figures and tables go


@dataclass(frozen=True)
class QaNotebook:
    benchmarks: list[str] = field(default_factory=lambda: list(_DEFAULT_BENCHMARKS))  # names
    sources: list[str] = field(default_factory=list)  # one per benchmark; ""/none: the sample
    memories: str = "runs"  # runs root holding runs/<video_id>/memory/<tag>/
    tag: str = "notebook"  # memory tag to evaluate
    answerer: str = "fake"  # model spec of the answerer
    judge: str = "fake"  # model spec of the free-form judge
    context: str = QAParams.context  # full | evidence | retrieval
    num_samples: int = QAParams.num_samples  # answers per question, majority vote
    stand_in: bool = False  # smoke only: memorize generated stand-in videos for missing memories
    figures: str = "figures"  # where figures and tables go


@dataclass(frozen=True)
class AblationsNotebook:
    video: str = ""  # video file; "" makes a generated sample
    models: list[str] = field(default_factory=lambda: ["fake"])  # model specs
    intervals: list[float] = field(default_factory=lambda: [MemorizeParams.interval])
    context_durations: list[float] = field(default_factory=lambda: [30.0, 50.0])
    faces: list[bool] = field(default_factory=lambda: [False])  # face perception off/on
    asr: list[bool] = field(default_factory=lambda: [False])  # ASR off/on
    tasks: list[bool] = field(default_factory=lambda: [False, True])  # task stream off/on
    face_fps: float = PerceptionChoices.face_fps  # frames per second searched for faces
    answerer: str = "fake"  # model spec that answers the sample questions from each memory
    end: float = 60.0  # stream time to stop at
    out: str = "runs"  # runs root
    figures: str = "figures"  # where figures and tables go


@dataclass(frozen=True)
class PaperNotebook:
    results: str = "runs/results"  # folder of evaluation results (one summary per benchmark)
    reported: str = "benchmarks/paper_results.csv"  # the paper's reported numbers, with source
    compare_to: str = "TaskMem"  # reported system the deltas are taken against
    figures: str = "figures"  # where figures and tables go


NOTEBOOK_PARAMS: dict[str, type] = {
    "01_audio": AudioNotebook,
    "02_faces": FacesNotebook,
    "03_episodic": EpisodicNotebook,
    "04_qa": QaNotebook,
    "05_ablations": AblationsNotebook,
    "06_paper": PaperNotebook,
}


def default_of(f: Any) -> Any:
    """A dataclass field's default (a fresh one for a `default_factory` field)."""
    return f.default_factory() if f.default_factory is not _MISSING else f.default


def from_cell(cls: type[T], names: Mapping[str, Any]) -> T:
    """The notebook's params built by field name from its parameters cell (`globals()`)."""
    missing = [f.name for f in fields(cls) if f.name not in names]
    if missing:
        raise ConfigError(f"{cls.__name__}: the parameters cell does not define {missing}")
    return cls(**{f.name: names[f.name] for f in fields(cls)})


def coerce(cls: type, values: dict[str, Any]) -> Any:
    """An instance of a notebook's params from strings or values; unknown names are an error."""
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown parameter(s) {', '.join(unknown)} for {cls.__name__}; known: {', '.join(known)}"
        )
    out: dict[str, Any] = {}
    for name, value in values.items():
        kind = known[name].type
        try:
            out[name] = _convert(str(kind), value)
        except ValueError as exc:
            raise ConfigError(f"parameter {name!r}: cannot read {value!r} as {kind}") from exc
    return cls(**out)


def _convert(kind: str, value: Any) -> Any:
    if kind.startswith("list["):
        return _convert_list(kind[len("list[") : -1], value)
    if not isinstance(value, str):
        return value
    if kind == "bool":
        low = value.lower()
        if low not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(value)
        return low in ("true", "1", "yes")
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    return value


def _convert_list(item: str, value: Any) -> list[Any]:
    """A list parameter from a list, or from `-p` text: a JSON/YAML list (`[10, 20]`) or one
    value (a one-item list). Text is never split at commas: a model spec may hold one."""
    if isinstance(value, str):
        text = value.strip()
        value = yaml.safe_load(text) if text.startswith("[") else [text]
    if not isinstance(value, list | tuple):
        raise ValueError(value)
    numeric = item in ("int", "float")
    return [_convert(item, str(v) if numeric and not isinstance(v, bool) else v) for v in value]

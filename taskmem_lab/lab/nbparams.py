"""Parameters of the stage notebooks: one frozen dataclass per notebook, field for field.

Floor 1. Each notebook's tagged `parameters` cell declares exactly these fields, with the same
types and defaults (a test checks it); `taskmem reproduce` validates overrides against them, so
an unknown or mistyped parameter is an error rather than papermill's warning. Model settings name
endpoints or specs, never keys.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from taskmem_lab.errors import ConfigError


@dataclass(frozen=True)
class AudioNotebook:
    video: str = ""  # video file; "" makes a generated sample with speech
    asr_backend: str = "whisper"  # whisper | vlm
    asr_model: str = (
        "tiny.en"  # whisper model name or local CTranslate2 directory; VLM spec for vlm
    )
    end: float = 60.0  # seconds of the stream to transcribe
    out: str = "runs"  # runs root
    figures: str = "figures"  # where figures and tables go


@dataclass(frozen=True)
class FacesNotebook:
    video: str = ""  # video file; "" makes a generated sample with faces
    face_backend: str = "dlib"  # dlib | insightface
    face_fps: float = 10.0  # frames per second searched for faces
    min_cluster_size: int = 3  # HDBSCAN minimum cluster size within a clip
    end: float = 60.0  # seconds of the stream to process
    out: str = "runs"  # runs root
    figures: str = "figures"  # where figures and tables go


@dataclass(frozen=True)
class EpisodicNotebook:
    video: str = ""  # video file or stream manifest; "" makes a generated sample
    model: str = "fake"  # model spec: fake, openai:NAME, hf:ID, vllm:ID
    tag: str = "notebook"  # name of the memory
    interval: float = 10.0  # seconds of new video per clip
    context_duration: float = 50.0  # seconds of video the model sees per clip
    end: float = 60.0  # stream time to stop at, 0 for the whole stream
    faces: bool = False  # run face perception
    asr: bool = False  # run speech recognition
    face_fps: float = 10.0  # frames per second searched for faces
    out: str = "runs"  # runs root
    figures: str = "figures"  # where figures and tables go


@dataclass(frozen=True)
class QaNotebook:
    benchmarks: str = "videomme,egolife,egotempo"  # comma-separated benchmark names
    sources: str = (
        ""  # comma-separated sources, one per benchmark; "" uses benchmarks/<name>/sample
    )
    memories: str = "runs"  # runs root holding runs/<video_id>/memory/<tag>/
    tag: str = "notebook"  # memory tag to evaluate
    answerer: str = "fake"  # model spec of the answerer
    judge: str = "fake"  # model spec of the free-form judge
    context: str = "full"  # full | evidence | retrieval
    num_samples: int = 1  # answers per question, majority vote
    stand_in: bool = False  # smoke only: memorize generated stand-in videos for missing memories
    figures: str = "figures"  # where figures and tables go


@dataclass(frozen=True)
class AblationsNotebook:
    video: str = ""  # video file; "" makes a generated sample
    models: str = "fake"  # comma-separated model specs
    intervals: str = "10"  # comma-separated clip intervals (s)
    context_durations: str = "30,50"  # comma-separated context durations (s)
    faces: str = "false"  # comma-separated on/off values for face perception
    asr: str = "false"  # comma-separated on/off values for ASR
    tasks: str = "false,true"  # comma-separated on/off values for the task stream
    face_fps: float = 10.0  # frames per second searched for faces when faces are on
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

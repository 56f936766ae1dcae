"""`MemoryBrowser(run)`: look through a memory clip by clip in Jupyter.

Floor 5. A clip slider and a timeline strip, the clip's frame annotated with the perception the
run used (face boxes with their `[face_N]` ids, speaker-prefixed subtitles), the transcript lines
with speakers, the episodic entry, the identity gallery and the tasks that had arrived by the
clip's end. Frames are decoded on demand, one per clip shown: the live widget decodes the clip
the slider is on, and the static view (what nbconvert, GitHub and saved notebooks show) is a
bounded summary, a strip of at most `thumbnails` frames and the entries, so a 10-hour run opens
in seconds. A run whose video moved is opened with `MemoryBrowser(run, video=...)`; a stored
relative path is also looked for beside the run, and a missing video is said on screen.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from taskmem_lab.schema import ClipRecord, Stream, StreamFile, Task
from taskmem_lab.store import RunDir, perception_dir, read_jsonl
from taskmem_lab.timefmt import span

_STATUS_COLOURS = {"ok": "#4c9f70", "failed": "#c0392b", "missing": "#cccccc"}
_SUBTITLE_WINDOW_S = 2.0  # speech this close to the frame's time is drawn as a subtitle

Annotator = Callable[[np.ndarray, float, ClipRecord], np.ndarray]


def jpeg_b64(image: np.ndarray, quality: int = 80) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return base64.b64encode(buf.getvalue()).decode()


class MemoryBrowser:
    """Browse one memory run (a folder `runs/<video>/memory/<tag>/` or its `RunDir`).

    `video` replaces the stored video path(s) (one file, or one per stream file); `annotate`
    replaces the default drawing of the run's perception; `thumbnails` bounds the static view.
    """

    def __init__(
        self,
        run: str | Path | RunDir,
        video: str | Path | Sequence[str | Path] | None = None,
        max_side: int = 480,
        annotate: Annotator | None = None,
        thumbnails: int = 8,
        max_entries: int = 200,
    ) -> None:
        self.run = run if isinstance(run, RunDir) else RunDir(Path(run))
        if not (self.run.path / "manifest.json").is_file():
            from taskmem_lab.errors import ConfigError

            raise ConfigError(f"{self.run.path} is not a memory run (no manifest.json there)")
        self.manifest = self.run.manifest()
        self.records = sorted(self.run.clips().values(), key=lambda r: r.start)
        self.max_side = max_side
        self.thumbnails = thumbnails
        self.max_entries = max_entries
        self.stream = Stream(
            self.manifest.get("stream_id", "stream"),
            tuple(
                StreamFile(str(p), float(s["start"]), float(s["duration"]))
                for s, p in zip(self.manifest["source"], self._video_paths(video), strict=True)
            ),
        )
        self.missing_video = [f.path for f in self.stream.files if not Path(f.path).is_file()]
        self.tasks = self._load_tasks()
        self.perception = self._load_perception()
        self.annotate = annotate if annotate is not None else self._draw_perception
        self._frames: dict[int, np.ndarray | None] = {}

    # ------------------------------------------------------------------ inputs

    def _video_paths(self, video: str | Path | Sequence[str | Path] | None) -> list[Path]:
        """The stream's files: `video` when given, else the stored paths (a relative one is
        looked for as stored and beside the run)."""
        stored = [Path(s["path"]) for s in self.manifest["source"]]
        if video is not None:
            given = [Path(video)] if isinstance(video, (str, Path)) else [Path(v) for v in video]
            if len(given) != len(stored):
                from taskmem_lab.errors import ConfigError

                raise ConfigError(
                    f"video= gives {len(given)} file(s); the run's stream has {len(stored)}"
                )
            return given
        out = []
        for p in stored:
            if not p.is_absolute() and not p.is_file():
                beside = [a / p for a in (self.run.path, *self.run.path.parents)]
                p = next((c for c in beside if c.is_file()), p)
            out.append(p)
        return out

    def _load_tasks(self) -> list[Task]:
        """The task stream the run was made with (`tasks.json`, written by the memorizer)."""
        path = self.run.path / "tasks.json"
        if not path.is_file():
            return []
        from taskmem_lab.tasks import load_tasks

        return load_tasks(path)

    def _load_perception(self) -> dict[int, dict[str, Any]]:
        """The perception records (faces with boxes, transcript) the run used, by clip."""
        entry = self.manifest.get("perception")
        if not entry or len(self.run.path.parents) < 3:
            return {}
        root = self.run.path.parents[2]  # runs/<video>/memory/<tag>
        path = perception_dir(root, self.stream.stream_id, entry["hash"]) / "clips.jsonl"
        if not path.is_file():
            return {}
        return {int(r["clip"]): r for r in read_jsonl(path)}

    # ------------------------------------------------------------------ content of one clip

    def frame_time(self, index: int) -> float:
        """The time shown for a clip: its last face detection in the new span, else 1 s before
        its end."""
        rec = self.records[index]
        faces = [
            float(d["time"])
            for d in self.perception.get(rec.clip, {}).get("faces", [])
            if d.get("identity") and rec.start <= float(d["time"]) <= rec.end
        ]
        return max(faces) if faces else max(rec.start, rec.end - 1.0)

    def frame(self, index: int) -> np.ndarray | None:
        """The clip's annotated frame, decoded on first request (None when the video is gone)."""
        if index not in self._frames:
            image: np.ndarray | None = None
            if not self.missing_video:
                from taskmem_lab.media.video import StreamFrames

                t = round(self.frame_time(index), 6)
                frames = StreamFrames(self.stream, self.max_side)
                try:
                    image = frames.window([t])[0].image
                finally:
                    frames.close()
                image = self.annotate(image, t, self.records[index])
            self._frames[index] = image
        return self._frames[index]

    def frame_at(self, t: float) -> np.ndarray | None:
        """The frame at stream time `t`, annotated with the perception of the clip holding it
        (None when the video is gone or no clip holds `t`)."""
        holding = [r for r in self.records if r.start <= t <= r.end]
        if self.missing_video or not holding:
            return None
        from taskmem_lab.media.video import StreamFrames

        frames = StreamFrames(self.stream, self.max_side)
        try:
            image = frames.window([round(t, 6)])[0].image
        finally:
            frames.close()
        return self.annotate(image, t, holding[-1])

    def _draw_perception(self, image: np.ndarray, t: float, rec: ClipRecord) -> np.ndarray:
        """Boxes with `[face_N]` labels for the faces detected at `t`, and the speech near `t`
        as subtitles, from the run's perception records (the clip record's transcript when the
        perception folder is gone)."""
        from taskmem_lab.media.video import Frame
        from taskmem_lab.perception.records import FaceDetection, Segment
        from taskmem_lab.perception.render import TIME_TOLERANCE, annotate

        stored = self.perception.get(rec.clip, {})
        faces = [
            FaceDetection(
                time=t,
                box=tuple(d["box"]),  # type: ignore[arg-type]
                score=float(d.get("score", 1.0)),
                quality=float(d.get("quality", 1.0)),
                embedding=np.zeros(0, np.float32),
                identity=str(d.get("identity", "")),
            )
            for d in stored.get("faces", [])
            if d.get("identity") and abs(float(d["time"]) - t) <= TIME_TOLERANCE
        ]
        near = [
            s
            for s in stored.get("transcript", rec.transcript)
            if float(s["start"]) < t + _SUBTITLE_WINDOW_S
            and float(s["end"]) > t - _SUBTITLE_WINDOW_S
        ][-2:]
        # Subtitles are drawn for segments overlapping the frame's span: pin the nearby ones there.
        segments = [Segment(t, t + 1.0, str(s["text"]), str(s.get("speaker", ""))) for s in near]
        ids = {d.identity: d.identity for d in faces}
        ids.update({s.speaker: s.speaker for s in segments if s.speaker.startswith("[face_")})
        if not faces and not segments:
            return image
        return annotate([Frame(t, image)], faces, segments, ids)[0].image

    def tasks_by(self, t: float) -> list[Task]:
        """Tasks that had arrived before stream time `t`."""
        return [task for task in self.tasks if task.time < t]

    def clip_html(self, index: int) -> str:
        """The clip's entry, transcript, identities on screen and tasks that had arrived."""
        rec = self.records[index]
        parts = [
            f"<h4>Clip {rec.clip} [{span(rec.start, rec.end, True)}] "
            f"<small>{html.escape(rec.status)}</small></h4>"
        ]
        if rec.fake:
            parts.append(
                "<p style='color:#c0392b'><b>Written by a fake model (test double): "
                "not model output.</b></p>"
            )
        if rec.ok:
            parts.append(f"<p class='taskmem-entry'>{html.escape(rec.episodic)}</p>")
        else:
            parts.append(f"<p style='color:#c0392b'>failed: {html.escape(rec.error)}</p>")
        if rec.semantic:
            parts.append(
                "<ul>" + "".join(f"<li>{html.escape(k)}</li>" for k in rec.semantic) + "</ul>"
            )
        if rec.transcript:
            lines = "".join(
                f"<li>[{span(float(s['start']), float(s['end']), True)}] "
                f"<b>{html.escape(str(s.get('speaker', '?')))}</b>: {html.escape(str(s['text']))}</li>"
                for s in rec.transcript
            )
            parts.append(f"<p><b>Transcript</b></p><ul class='taskmem-transcript'>{lines}</ul>")
        else:
            parts.append("<p class='taskmem-transcript'><i>(no speech in this clip)</i></p>")
        if rec.identities:
            parts.append(f"<p><b>On screen:</b> {html.escape(', '.join(rec.identities))}</p>")
        arrived = self.tasks_by(rec.end)
        if arrived:
            items = "".join(f"<li>{html.escape(t.question)}</li>" for t in arrived[-5:])
            parts.append(f"<p><b>Tasks arrived by then</b></p><ul>{items}</ul>")
        return "\n".join(parts)

    def video_message(self) -> str:
        """A visible note when the run's video is not where the manifest says."""
        if not self.missing_video:
            return ""
        where = ", ".join(html.escape(str(p)) for p in self.missing_video)
        return (
            f"<p style='color:#c0392b'><b>Video not found</b> ({where}): frames are not shown. "
            "Open the run with <code>MemoryBrowser(run, video=...)</code>.</p>"
        )

    def frame_html(self, index: int, width: int = 360) -> str:
        """The clip's frame as an inline JPEG (or a note that the video is missing)."""
        image = self.frame(index)
        if image is None:
            return "<p><i>(video not available)</i></p>"
        return (
            f"<img class='taskmem-frame' data-clip='{self.records[index].clip}' width='{width}' "
            f"src='data:image/jpeg;base64,{jpeg_b64(image)}'/>"
        )

    def timeline_html(self, current: int | None = None) -> str:
        """A strip with one cell per clip, as wide as the clip is long, coloured by status."""
        if not self.records:
            return "<p><i>(no clips)</i></p>"
        total = max(r.end for r in self.records) - min(r.start for r in self.records) or 1.0
        cells = []
        for i, r in enumerate(self.records):
            width = max(0.3, 100 * (r.end - r.start) / total)
            border = "2px solid black" if i == current else "1px solid white"
            cells.append(
                f"<div title='clip {r.clip} {span(r.start, r.end)}' style='width:{width:.2f}%;"
                f"height:14px;background:{_STATUS_COLOURS.get(r.status, '#999')};"
                f"border:{border};box-sizing:border-box'></div>"
            )
        return f"<div style='display:flex;width:100%'>{''.join(cells)}</div>"

    def gallery_html(self) -> str:
        """One crop per character, from the identities stored with the run or its perception."""
        entries = _gallery_entries(self.run.path)
        if not entries:
            return ""
        cells = "".join(
            f"<figure style='margin:2px'><img style='height:64px;width:auto' src='data:image/jpeg;base64,"
            f"{base64.b64encode(Path(p).read_bytes()).decode()}'/>"
            f"<figcaption>{html.escape(gid)}</figcaption></figure>"
            for gid, p in entries
        )
        return f"<p><b>Identities</b></p><div style='display:flex;flex-wrap:wrap'>{cells}</div>"

    # ------------------------------------------------------------------ views

    def thumbnail_indices(self) -> list[int]:
        """At most `thumbnails` clips, evenly spread over the run (first and last included)."""
        n = len(self.records)
        if n <= self.thumbnails:
            return list(range(n))
        return sorted({round(i * (n - 1) / (self.thumbnails - 1)) for i in range(self.thumbnails)})

    def static_html(self) -> str:
        """The bounded summary: timeline, gallery, a thumbnail strip and the entries (at most
        `max_entries`, evenly spread, with a note saying how many are left out)."""
        head = (
            f"<h3>Memory {html.escape(str(self.run.path))} ({len(self.records)} clips)</h3>"
            f"{self.video_message()}{self.timeline_html()}{self.gallery_html()}"
        )
        strip = ""
        if not self.missing_video and self.records:
            cells = "".join(
                f"<figure style='margin:2px'>{self.frame_html(i, 200)}<figcaption>clip "
                f"{self.records[i].clip} [{span(self.records[i].start, self.records[i].end)}]"
                "</figcaption></figure>"
                for i in self.thumbnail_indices()
            )
            strip = f"<div style='display:flex;flex-wrap:wrap'>{cells}</div>"
        n = len(self.records)
        if n <= self.max_entries:
            shown = list(range(n))
        else:
            shown = sorted(
                {round(i * (n - 1) / (self.max_entries - 1)) for i in range(self.max_entries)}
            )
        rows = "".join(
            f"<tr><td style='vertical-align:top;text-align:left'>{self.clip_html(i)}</td></tr>"
            for i in shown
        )
        more = (
            f"<p><i>{n - len(shown)} more entries: open the live browser in Jupyter or "
            "<code>Memory.load(run).to_text()</code>.</i></p>"
            if len(shown) < n
            else ""
        )
        return f"<div class='taskmem-browser'>{head}{strip}<table>{rows}</table>{more}</div>"

    def widget(self) -> Any:
        """The live view: a slider whose move decodes and shows that clip's frame and entry."""
        import ipywidgets as w

        if not self.records:
            return w.HTML("<p><i>(no clips)</i></p>")
        slider = w.IntSlider(
            value=0, min=0, max=len(self.records) - 1, description="clip", continuous_update=False
        )
        timeline = w.HTML(self.timeline_html(0))
        frame = w.HTML(self.frame_html(0))
        details = w.HTML(self.clip_html(0))

        def show(change: dict[str, Any]) -> None:
            i = int(change["new"])
            timeline.value = self.timeline_html(i)
            frame.value = self.frame_html(i)
            details.value = self.clip_html(i)

        slider.observe(show, names="value")
        gallery = w.HTML(self.gallery_html())
        notice = w.HTML(self.video_message())
        return w.VBox([slider, timeline, w.HBox([frame, details]), gallery, notice])

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return live_bundle(
            f"MemoryBrowser({self.run.path}, {len(self.records)} clips)",
            self.static_html(),
            self.widget,
        )


def live_bundle(plain: str, static: str, widget: Callable[[], Any]) -> dict[str, Any]:
    """A display bundle: the static HTML (what nbconvert and saved notebooks show) and, where
    ipywidgets is installed, the live widget (what Jupyter shows)."""
    bundle: dict[str, Any] = {"text/plain": plain, "text/html": static}
    try:
        view = widget()._repr_mimebundle_()
    except ImportError:
        return bundle
    if isinstance(view, tuple):  # (data, metadata) in some ipywidgets versions
        view = view[0]
    if view:
        bundle.update({k: v for k, v in view.items() if k != "text/plain"})
    return bundle


def _gallery_entries(run_path: Path) -> list[tuple[str, str]]:
    """(global id, crop path) per character: crops live with the perception's registry."""
    path = run_path / "identities.json"
    if not path.is_file():
        return []
    data = json.loads(path.read_text(encoding="utf-8"))
    base = Path(data.get("registry") or path.parent)
    out = []
    for gid, info in data.get("characters", {}).items():
        crop = info.get("crop") if isinstance(info, dict) else None
        if crop and (base / crop).is_file():
            out.append((gid, str(base / crop)))
    return out

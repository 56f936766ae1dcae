"""`MemoryBrowser(run)`: look through a memory clip by clip in Jupyter.

Floor 7. A clip slider and a timeline strip, the clip's frame (annotated with boxes, ids and
subtitles when perception ran), the transcript lines with speakers, the episodic entry, the
identity gallery and the tasks that had arrived by the clip's end. In a frontend without widget
support (nbconvert, GitHub, papermill outputs) the same content shows as static HTML: the object's
MIME bundle carries both the widget view and the HTML.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from taskmem_lab.schema import ClipRecord, Stream, StreamFile, Task
from taskmem_lab.store import RunDir
from taskmem_lab.timefmt import span

_STATUS_COLOURS = {"ok": "#4c9f70", "failed": "#c0392b", "missing": "#cccccc"}


def _jpeg_b64(image: np.ndarray, quality: int = 80) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return base64.b64encode(buf.getvalue()).decode()


class MemoryBrowser:
    """Browse one memory run. `annotate(frame, record) -> image` may draw perception results."""

    def __init__(
        self,
        run: str | Path | RunDir,
        max_side: int = 480,
        annotate: Callable[[np.ndarray, float, ClipRecord], np.ndarray] | None = None,
    ) -> None:
        self.run = run if isinstance(run, RunDir) else RunDir(Path(run))
        self.manifest = self.run.manifest()
        self.records = list(self.run.clips().values())
        self.max_side = max_side
        self.annotate = annotate
        self.stream = Stream(
            self.manifest.get("stream_id", "stream"),
            tuple(
                StreamFile(s["path"], float(s["start"]), float(s["duration"]))
                for s in self.manifest["source"]
            ),
        )
        self.tasks = self._load_tasks()
        self._frames: dict[int, np.ndarray | None] = {}

    def _load_tasks(self) -> list[Task]:
        """The task stream the run was made with (`tasks.json`, written by the memorizer)."""
        path = self.run.path / "tasks.json"
        if not path.is_file():
            return []
        from taskmem_lab.tasks import load_tasks

        return load_tasks(path)

    # ------------------------------------------------------------------ content of one clip

    def frame(self, index: int) -> np.ndarray | None:
        """The last sampled frame of the clip's new span (None when the video is gone)."""
        if index not in self._frames:
            rec = self.records[index]
            t = max(rec.start, rec.end - 1.0)
            image: np.ndarray | None = None
            if all(Path(f.path).is_file() for f in self.stream.files):
                from taskmem_lab.media.video import StreamFrames

                frames = StreamFrames(self.stream, self.max_side)
                try:
                    image = frames.window([round(t, 6)])[0].image
                finally:
                    frames.close()
                if self.annotate is not None:
                    image = self.annotate(image, t, rec)
            self._frames[index] = image
        return self._frames[index]

    def tasks_by(self, t: float) -> list[Task]:
        return [task for task in self.tasks if task.time < t]

    def clip_html(self, index: int) -> str:
        rec = self.records[index]
        parts = [
            f"<h4>Clip {rec.clip} [{span(rec.start, rec.end, True)}] <small>{html.escape(rec.status)}</small></h4>"
        ]
        if rec.fake:
            parts.append(
                "<p style='color:#c0392b'><b>Written by a fake model (test double): not model output.</b></p>"
            )
        if rec.ok:
            parts.append(f"<p>{html.escape(rec.episodic)}</p>")
        else:
            parts.append(f"<p style='color:#c0392b'>failed: {html.escape(rec.error)}</p>")
        if rec.semantic:
            parts.append(
                "<ul>" + "".join(f"<li>{html.escape(k)}</li>" for k in rec.semantic) + "</ul>"
            )
        if rec.transcript:
            lines = "".join(
                f"<li>[{span(float(s['start']), float(s['end']), True)}] <b>{html.escape(str(s.get('speaker', '?')))}</b>: "
                f"{html.escape(str(s['text']))}</li>"
                for s in rec.transcript
            )
            parts.append(f"<p><b>Transcript</b></p><ul>{lines}</ul>")
        if rec.identities:
            parts.append(f"<p><b>On screen:</b> {html.escape(', '.join(rec.identities))}</p>")
        arrived = self.tasks_by(rec.end)
        if arrived:
            items = "".join(f"<li>{html.escape(t.question)}</li>" for t in arrived[-5:])
            parts.append(f"<p><b>Tasks arrived by then</b></p><ul>{items}</ul>")
        return "\n".join(parts)

    def frame_html(self, index: int, width: int = 360) -> str:
        image = self.frame(index)
        if image is None:
            return "<p><i>(video not available)</i></p>"
        return f"<img width='{width}' src='data:image/jpeg;base64,{_jpeg_b64(image)}'/>"

    def timeline_html(self, current: int | None = None) -> str:
        if not self.records:
            return "<p><i>(no clips)</i></p>"
        total = max(r.end for r in self.records) - min(r.start for r in self.records) or 1.0
        cells = []
        for i, r in enumerate(self.records):
            width = max(0.3, 100 * (r.end - r.start) / total)
            border = "2px solid black" if i == current else "1px solid white"
            cells.append(
                f"<div title='clip {r.clip} {span(r.start, r.end)}' style='width:{width:.2f}%;height:14px;"
                f"background:{_STATUS_COLOURS.get(r.status, '#999')};border:{border};box-sizing:border-box'></div>"
            )
        return f"<div style='display:flex;width:100%'>{''.join(cells)}</div>"

    def gallery_html(self) -> str:
        """One crop per character, from the identities stored with the run or its perception."""
        entries = _gallery_entries(self.run.path, self.manifest)
        if not entries:
            return ""
        cells = "".join(
            f"<figure style='margin:2px'><img height='64' src='data:image/jpeg;base64,"
            f"{base64.b64encode(Path(p).read_bytes()).decode()}'/><figcaption>{html.escape(gid)}</figcaption></figure>"
            for gid, p in entries
        )
        return f"<p><b>Identities</b></p><div style='display:flex;flex-wrap:wrap'>{cells}</div>"

    # ------------------------------------------------------------------ views

    def static_html(self, max_clips: int | None = None) -> str:
        rows = []
        for i in range(
            len(self.records) if max_clips is None else min(max_clips, len(self.records))
        ):
            rows.append(
                f"<tr><td style='vertical-align:top'>{self.frame_html(i, 240)}</td>"
                f"<td style='vertical-align:top;text-align:left'>{self.clip_html(i)}</td></tr>"
            )
        head = f"<h3>Memory {html.escape(str(self.run.path))}</h3>{self.timeline_html()}{self.gallery_html()}"
        return head + f"<table>{''.join(rows)}</table>"

    def widget(self) -> Any:
        import ipywidgets as w

        if not self.records:
            return w.HTML("<p><i>(no clips)</i></p>")
        slider = w.IntSlider(value=0, min=0, max=len(self.records) - 1, description="clip")
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
        return w.VBox([slider, timeline, w.HBox([frame, details]), gallery])

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle: dict[str, Any] = {
            "text/plain": f"MemoryBrowser({self.run.path}, {len(self.records)} clips)",
            "text/html": self.static_html(),
        }
        try:
            view = self.widget()._repr_mimebundle_()
        except ImportError:
            return bundle
        if isinstance(view, tuple):  # (data, metadata) in some ipywidgets versions
            view = view[0]
        if view:
            bundle.update({k: v for k, v in view.items() if k != "text/plain"})
        return bundle


def _gallery_entries(run_path: Path, manifest: dict[str, Any]) -> list[tuple[str, str]]:
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

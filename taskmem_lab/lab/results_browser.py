"""`ResultsBrowser(results_dir)`: read an evaluation's answers one question at a time in Jupyter.

Floor 5. Filters by outcome (correct, wrong, abstained, unparseable, judge-unparseable), task type
and error class (`evaluation.attribution`: memorization miss, answering miss, unattributed). For
one question it shows the question and options, the context the answerer saw (rebuilt with the
run's own settings by the code that built it; entries overlapping the evidence windows marked),
every raw reply and what it parsed to, the judge's reply, the attribution verdict, a second
judge's disagreement (`taskmem judge-agreement`) and, when the memory is a run directory whose
video is at hand, the frames at the evidence times with the memory's annotations
(`MemoryBrowser.frame_at`). The static view (nbconvert, saved notebooks, `save`) is a table of
every question and the details of at most `max_details` of them, errors first.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from taskmem_lab.errors import ConfigError

OUTCOMES = ("correct", "wrong", "abstained", "unparseable", "judge-unparseable")
ANY = "(any)"
_COLOURS = {
    "correct": "#4c9f70",
    "wrong": "#c0392b",
    "abstained": "#e67e22",
    "unparseable": "#8e44ad",
    "judge-unparseable": "#7f8c8d",
}


def outcome(row: Mapping[str, Any]) -> str:
    """One of `OUTCOMES` for a results row."""
    if row.get("correct"):
        return "correct"
    if row["status"] in ("abstained", "unparseable"):
        return str(row["status"])
    if (row.get("judge") or {}).get("status") == "unparseable":
        return "judge-unparseable"
    return "wrong"


def _esc(value: Any) -> str:
    return html.escape(str(value))


class ResultsBrowser:
    """Browse one evaluation results folder (what `taskmem eval` or `04_qa` wrote).

    `video` maps a video id to its file when the stored path moved; `max_details` bounds the
    static view; `frames` caps the evidence frames shown per question.
    """

    def __init__(
        self,
        results: str | Path,
        video: Mapping[str, str | Path] | None = None,
        max_details: int = 30,
        frames: int = 3,
        max_side: int = 320,
    ) -> None:
        from taskmem_lab.evaluation.agreement import read_agreements
        from taskmem_lab.evaluation.evaluate import results_dir

        self.path = Path(results)
        folder = results_dir(self.path)
        if not folder.exists():
            raise ConfigError(f"{self.path} is not an evaluation results folder (no run.json)")
        self.settings = folder.settings()
        self.rows = list(folder.good().values())
        if not self.rows:
            raise ConfigError(f"{self.path} holds no answered questions yet (results.jsonl)")
        self.by_id = {str(r["id"]): r for r in self.rows}
        self.video = dict(video or {})
        self.max_details = max_details
        self.frames = frames
        self.max_side = max_side
        self.second_opinions: dict[str, list[dict[str, Any]]] = {}
        for data in read_agreements(self.path):
            for d in data.get("disagreements", []):
                item = {**d, "second_judge": data["second_judge"]}
                self.second_opinions.setdefault(str(d["id"]), []).append(item)
        self._memories: dict[str, Any] = {}
        self._browsers: dict[str, Any] = {}
        self._pages: dict[str, str] = {}

    # ------------------------------------------------------------------ selection

    def error_class(self, row: Mapping[str, Any]) -> str | None:
        from taskmem_lab.evaluation.attribution import error_class

        return error_class(row)

    def select(
        self,
        outcome_is: str | None = None,
        task_type: str | None = None,
        error_class: str | None = None,
    ) -> list[str]:
        """Question ids matching every filter given (None or `(any)`: no filter)."""
        out = []
        for qid, row in self.by_id.items():
            if outcome_is not in (None, ANY) and outcome(row) != outcome_is:
                continue
            if task_type not in (None, ANY) and row["task_type"] != task_type:
                continue
            if error_class not in (None, ANY) and self.error_class(row) != error_class:
                continue
            out.append(qid)
        return out

    def task_types(self) -> list[str]:
        return sorted({str(r["task_type"]) for r in self.rows})

    # ------------------------------------------------------------------ context

    def memory(self, row: Mapping[str, Any]) -> Any:
        """The memory a row was answered from (None when it is no longer where it was)."""
        from taskmem_lab.memory import load_any

        path = str(row["context"]["memory"])
        if path not in self._memories:
            self._memories[path] = load_any(path) if Path(path).exists() else None
        return self._memories[path]

    def context_entries(self, row: Mapping[str, Any]) -> tuple[list[Any], str]:
        """The entries the answerer saw, rebuilt with the run's settings, and a note."""
        from taskmem_lab.evaluation.qa import QAParams, select_entries
        from taskmem_lab.memory import Memory

        memory = self.memory(row)
        if memory is None:
            return [], f"the memory is no longer at {row['context']['memory']}"
        ctx = row["context"]
        qa = QAParams(**{**self.settings.get("qa", {}), "context": ctx["mode"]})
        if ctx["mode"] == "retrieval":
            kept = {tuple(s) for s in ctx.get("spans") or []}
            if not kept:
                return [], "retrieval context: the retrieved entries were not recorded"
            entries = [e for e in memory.entries if (e.start, e.end) in kept]
            return entries, "the entries retrieved for the question"
        entries, note = select_entries(_record(row), memory, qa)
        n = int(ctx["entries"])
        if len(entries) > n:  # oldest entries were dropped to fit the cap
            entries = entries[len(entries) - n :]
        if not Memory(entries).to_text(qa.memory_kind):
            note += " (no memory entries)"
        return entries, note

    def in_evidence(self, entry: Any, row: Mapping[str, Any]) -> bool:
        from taskmem_lab.evaluation.qa import overlaps

        pad = float(self.settings.get("qa", {}).get("evidence_pad_s", 0.0))
        return any(overlaps(entry, a - pad, b + pad) for a, b in row.get("evidence") or [])

    # ------------------------------------------------------------------ frames

    def _memory_browser(self, row: Mapping[str, Any]) -> Any:
        """A `MemoryBrowser` over the row's memory run (None for a memory file or no video)."""
        path = Path(str(row["context"]["memory"]))
        key = str(path)
        if key not in self._browsers:
            browser = None
            if (path / "manifest.json").is_file():
                from taskmem_lab.lab.widgets import MemoryBrowser

                given = self.video.get(str(row["video_id"]))
                try:
                    browser = MemoryBrowser(path, video=given, max_side=self.max_side)
                except ConfigError:
                    browser = None
            self._browsers[key] = browser
        return self._browsers[key]

    def evidence_times(self, row: Mapping[str, Any]) -> list[float]:
        """The middle of each evidence window, at most `frames` of them."""
        return [(a + b) / 2 for a, b in (row.get("evidence") or [])][: self.frames]

    def frames_html(self, row: Mapping[str, Any]) -> str:
        times = self.evidence_times(row)
        if not times:
            return ""
        browser = self._memory_browser(row)
        if browser is None or browser.missing_video:
            return (
                "<p class='taskmem-noframes'><i>Frames at the evidence times need the memory's "
                "run directory and its video (pass <code>video={video_id: path}</code>).</i></p>"
            )
        from taskmem_lab.lab.widgets import jpeg_b64
        from taskmem_lab.timefmt import hms

        cells = []
        for t in times:
            image = browser.frame_at(t)
            if image is None:
                cells.append(f"<figure><i>no clip holds {hms(t)}</i></figure>")
                continue
            cells.append(
                f"<figure style='margin:2px'><img class='taskmem-evidence-frame' width='240' "
                f"src='data:image/jpeg;base64,{jpeg_b64(image)}'/><figcaption>{hms(t)}"
                "</figcaption></figure>"
            )
        return (
            "<p><b>Frames at the evidence times</b> (with the memory's perception)</p>"
            f"<div style='display:flex;flex-wrap:wrap'>{''.join(cells)}</div>"
        )

    # ------------------------------------------------------------------ one question

    def question_html(self, qid: str, with_frames: bool = True) -> str:
        """Everything about one question (see the module docstring)."""
        from taskmem_lab.timefmt import span

        row = self.by_id[qid]
        kind = outcome(row)
        cls = self.error_class(row)
        head = (
            f"<h4 class='taskmem-question' data-id='{_esc(qid)}'>{_esc(qid)} · "
            f"{_esc(row['task_type'])} · <span style='color:{_COLOURS[kind]}'>{kind}</span>"
            + (f" · {_esc(cls.replace('_', ' '))}" if cls else "")
            + "</h4>"
        )
        parts = [head]
        if row.get("fake"):
            parts.append("<p style='color:#c0392b'><b>Fake model output (test double).</b></p>")
        parts.append(f"<p><b>Q:</b> {_esc(row['question'])}</p>")
        if row.get("options"):
            letters = "ABCDEFGH"
            bold = " style='font-weight:bold'"
            items = "".join(
                f"<li{bold if letters[i] == row['reference'] else ''}>{letters[i]}. {_esc(o)}</li>"
                for i, o in enumerate(row["options"])
            )
            parts.append(f"<ul class='taskmem-options'>{items}</ul>")
        parts.append(
            f"<p><b>Reference:</b> {_esc(row['reference'])} · <b>prediction:</b> "
            f"{_esc(row.get('prediction') or '–')} ({_esc(row['status'])})</p>"
        )
        parts.append(self._replies_html(row))
        parts.append(self._judge_html(row))
        parts.append(self._attribution_html(row))
        parts.append(self._context_html(row, span))
        if with_frames:
            parts.append(self.frames_html(row))
        return "<div class='taskmem-result'>" + "\n".join(p for p in parts if p) + "</div>"

    def live_html(self, qid: str) -> str:
        """`question_html`, kept per question (the live view decodes a question's frames once)."""
        if qid not in self._pages:
            self._pages[qid] = self.question_html(qid)
        return self._pages[qid]

    def _replies_html(self, row: Mapping[str, Any]) -> str:
        items = "".join(
            f"<li><pre class='taskmem-reply' style='white-space:pre-wrap'>{_esc(s['text'])}</pre>"
            f"→ {_esc(s['status'])} {_esc(s.get('value') or '')}</li>"
            for s in row["answerer"]["samples"]
        )
        return f"<p><b>Replies of {_esc(row['answerer']['model'])}</b></p><ol>{items}</ol>"

    def _judge_html(self, row: Mapping[str, Any]) -> str:
        j = row.get("judge")
        out = ""
        if j:
            raw = "".join(f"<pre style='white-space:pre-wrap'>{_esc(t)}</pre>" for t in j["raw"])
            verdict = (
                f"correct {j['correct']}, score {j['score']}" if j["status"] == "ok" else "unread"
            )
            out = (
                f"<p class='taskmem-judge'><b>Judge {_esc(j['model'])}:</b> {verdict}. "
                f"{_esc(j.get('reason', ''))}</p>{raw}"
            )
        for d in self.second_opinions.get(str(row["id"]), []):
            out += (
                f"<p class='taskmem-disagreement' style='color:#c0392b'><b>Second judge "
                f"{_esc(d['second_judge'])} disagrees:</b> correct {d['second']} "
                f"(first: {d['first']}). {_esc(d.get('second_reason', ''))}</p>"
            )
        return out

    def _attribution_html(self, row: Mapping[str, Any]) -> str:
        a = row.get("attribution")
        if not a:
            return ""
        said = {True: "the memory holds it", False: "the memory does not hold it", None: "unread"}
        raw = "".join(f"<pre style='white-space:pre-wrap'>{_esc(t)}</pre>" for t in a["raw"])
        return (
            f"<p class='taskmem-attribution'><b>Was it in memory?</b> "
            f"({_esc(a['key']['mode'])}, {_esc(a['key']['model'])}): {said[a.get('in_memory')]}"
            f" ({_esc(a['status'])}). {_esc(a.get('reason', ''))}</p>{raw}"
        )

    def _context_html(self, row: Mapping[str, Any], span: Any) -> str:
        entries, note = self.context_entries(row)
        ctx = row["context"]
        lines = []
        for e in entries:
            marked = self.in_evidence(e, row)
            style = " style='background:#fff3b0'" if marked else ""
            klass = "taskmem-context-entry" + (" taskmem-evidence" if marked else "")
            lines.append(
                f"<li class='{klass}'{style}>[{span(e.start, e.end)}] {_esc(e.text)}"
                + "".join(f"<br/>- {_esc(k)}" for k in e.knowledge)
                + "</li>"
            )
        body = f"<ul>{''.join(lines)}</ul>" if lines else "<p><i>(no entries)</i></p>"
        windows = ", ".join(span(a, b) for a, b in row.get("evidence") or []) or "none"
        return (
            f"<details open><summary><b>Context the answerer saw</b> ({_esc(ctx['mode'])}: "
            f"{_esc(note)}; {ctx['entries']} entries, {ctx['chars']} characters; evidence "
            f"{windows}, marked)</summary>{body}</details>"
        )

    # ------------------------------------------------------------------ views

    def summary_html(self, ids: Sequence[str] | None = None) -> str:
        """A table of questions: id, task type, outcome, error class, prediction, reference."""
        ids = list(self.by_id) if ids is None else list(ids)
        rows = "".join(
            f"<tr><td>{_esc(q)}</td><td>{_esc(self.by_id[q]['task_type'])}</td>"
            f"<td style='color:{_COLOURS[outcome(self.by_id[q])]}'>{outcome(self.by_id[q])}</td>"
            f"<td>{_esc(self.error_class(self.by_id[q]) or '')}</td>"
            f"<td>{_esc(self.by_id[q].get('prediction') or '')}</td>"
            f"<td>{_esc(self.by_id[q]['reference'])}</td></tr>"
            for q in ids
        )
        return (
            "<table class='taskmem-results'><tr><th>id</th><th>task type</th><th>outcome</th>"
            f"<th>error class</th><th>prediction</th><th>reference</th></tr>{rows}</table>"
        )

    def counts_html(self) -> str:
        counts = {k: 0 for k in OUTCOMES}
        for row in self.rows:
            counts[outcome(row)] += 1
        return " · ".join(f"{k} {v}" for k, v in counts.items())

    def static_html(self) -> str:
        """The bounded export: counts, every question's line, and details of at most
        `max_details` questions (wrong, abstained and unparseable ones first)."""
        order = sorted(self.by_id, key=lambda q: (outcome(self.by_id[q]) == "correct", q))
        shown = order[: self.max_details]
        more = (
            f"<p><i>{len(order) - len(shown)} more questions: open the live browser in Jupyter."
            "</i></p>"
            if len(shown) < len(order)
            else ""
        )
        details = "".join(f"<hr/>{self.live_html(q)}" for q in shown)  # cached pages
        return (
            f"<div class='taskmem-results-browser'><h3>Results {_esc(self.path)} "
            f"({len(self.rows)} questions)</h3><p>{self.counts_html()}</p>"
            f"{self.summary_html(order)}{details}{more}</div>"
        )

    def save(self, path: str | Path) -> Path:
        """Write the static view as a standalone HTML file."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(
            "<!doctype html><html><head><meta charset='utf-8'><title>taskmem results</title>"
            f"</head><body>{self.static_html()}</body></html>",
            encoding="utf-8",
        )
        return p

    def widget(self) -> Any:
        """The live view: three filters, a question picker and the question's details."""
        import ipywidgets as w

        from taskmem_lab.evaluation.attribution import ERROR_CLASSES

        pick_outcome = w.Dropdown(options=[ANY, *OUTCOMES], description="outcome")
        pick_type = w.Dropdown(options=[ANY, *self.task_types()], description="task type")
        pick_class = w.Dropdown(options=[ANY, *ERROR_CLASSES], description="error class")
        pick_question = w.Dropdown(description="question")
        counts = w.HTML(self.counts_html())
        details = w.HTML()

        def refilter(_: Any = None) -> None:
            ids = self.select(pick_outcome.value, pick_type.value, pick_class.value)
            pick_question.options = ids
            counts.value = f"{self.counts_html()} — {len(ids)} shown"
            if not ids:
                details.value = "<p class='taskmem-result'><i>(no question matches)</i></p>"
                return
            if pick_question.value not in ids:
                pick_question.value = ids[0]
            details.value = self.live_html(pick_question.value)

        def show(change: dict[str, Any]) -> None:
            if change["new"]:
                details.value = self.live_html(change["new"])

        pick_question.observe(show, names="value")
        for d in (pick_outcome, pick_type, pick_class):
            d.observe(refilter, names="value")
        refilter()
        for d in (pick_outcome, pick_type, pick_class, pick_question):
            d.add_class("taskmem-filter")
        return w.VBox(
            [w.HBox([pick_outcome, pick_type, pick_class]), pick_question, counts, details]
        )

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        from taskmem_lab.lab.widgets import live_bundle

        return live_bundle(
            f"ResultsBrowser({self.path}, {len(self.rows)} questions)",
            self.static_html(),
            self.widget,
        )


def _record(row: Mapping[str, Any]) -> Any:
    """The question of a results row as a `QARecord` (for rebuilding its context)."""
    from taskmem_lab.bench.record import QARecord

    return QARecord(
        id=str(row["id"]),
        benchmark=str(row["benchmark"]),
        video_id=str(row["video_id"]),
        question=str(row["question"]),
        options=tuple(row.get("options") or ()),
        answer=str(row["reference"]),
        answer_kind=str(row["answer_kind"]),
        task_type=str(row["task_type"]),
        query_time=row.get("query_time"),
        evidence=tuple(tuple(w) for w in row.get("evidence") or ()),  # type: ignore[misc]
    )

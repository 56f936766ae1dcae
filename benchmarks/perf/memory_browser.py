"""How long `MemoryBrowser` takes to open and display a 10-hour memory.

Builds a small real memory with the `fake` model (a 20 s generated video, two 10 s clips), then
stretches it into a 10-hour run: the manifest's stream becomes 1800 back-to-back copies of the
same file and the clip records are repeated with shifted times (3600 clips of 10 s). Prints the
wall time of: opening the run, the static view (what nbconvert and saved notebooks show: at most
8 thumbnails and 200 entries), the live widget (one frame), moving the slider once, and the whole
MIME bundle a notebook cell displays.

Target (issue 14): a 10-hour run opens and displays in seconds on 2 cores.

    python benchmarks/perf/memory_browser.py [--hours 10] [--workdir /tmp/taskmem-perf-browser]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def stretch(run: Path, hours: float, clip_s: float = 10.0) -> int:
    """Rewrite `run` in place as a `hours`-long stream of copies of its video; returns clips."""
    manifest = json.loads((run / "manifest.json").read_text())
    source = manifest["source"][0]
    file_s = float(source["duration"])
    copies = int(hours * 3600 // file_s)
    manifest["source"] = [{**source, "start": i * file_s} for i in range(copies)]
    records = [json.loads(line) for line in (run / "clips.jsonl").read_text().splitlines()]
    template = records[0]
    n = int(copies * file_s // clip_s)
    with open(run / "clips.jsonl", "w") as fh:
        for i in range(n):
            start = i * clip_s
            rec = {**template, "clip": i, "start": start, "end": start + clip_s}
            rec["window"] = [max(0.0, start - 40.0), start + clip_s]
            fh.write(json.dumps(rec) + "\n")
    (run / "manifest.json").write_text(json.dumps(manifest))
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hours", type=float, default=10.0)
    parser.add_argument("--workdir", default="/tmp/taskmem-perf-browser")
    args = parser.parse_args()

    from taskmem_lab.lab.widgets import MemoryBrowser
    from taskmem_lab.params import MemorizeParams
    from taskmem_lab.pipeline import build_memory
    from taskmem_lab.testing.media import test_video

    work = Path(args.workdir)
    (work / "media").mkdir(parents=True, exist_ok=True)
    video = work / "media" / "clip.mp4"
    if not video.exists():
        test_video(video, 20, size="640x360", fps=30, audio=False)
    run = build_memory(
        video,
        "fake",
        MemorizeParams(interval=10, context_duration=10),
        tag="perf",
        out=work / "runs",
        cache=False,
        progress=False,
    ).path
    clips = stretch(run, args.hours)
    print(f"run: {clips} clips over {args.hours:g} h (one 20 s file repeated)")

    t0 = time.perf_counter()
    browser = MemoryBrowser(run)
    t1 = time.perf_counter()
    html = browser.static_html()
    t2 = time.perf_counter()
    view = browser.widget()
    t3 = time.perf_counter()
    view.children[0].value = clips // 2
    t4 = time.perf_counter()
    bundle = MemoryBrowser(run)._repr_mimebundle_()
    t5 = time.perf_counter()
    print(f"open the run:            {t1 - t0:6.2f} s")
    print(f"static view:             {t2 - t1:6.2f} s ({len(html) / 1e6:.1f} MB of HTML)")
    print(f"live widget (1 frame):   {t3 - t2:6.2f} s")
    print(f"move the slider once:    {t4 - t3:6.2f} s")
    print(f"display (open + bundle): {t5 - t4:6.2f} s ({len(bundle)} MIME types)")


if __name__ == "__main__":
    main()

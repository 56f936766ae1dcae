"""What reopening a benchmark-sized run spends on source identity (hashing and probing files).

Generates, in --workdir, an EgoLife-style week (--files 30 s videos of --file-mb each, in
`A1_JAKE/DAYn/DAYn_A1_JAKE_HHMMSSFF.mp4`) and a Video-MME-style folder (--videos files of
--video-mb each). Each file is a tiny real H.264 video padded to its size with a hole (a sparse
file: it reads as zeros and takes no disk), so hashing reads every byte, as it would on real
videos, and probing reads the real container. Then, each in a fresh process (no digest or length
remembered in memory), --repeat times:

- week, first open: plan the week (`bench/plan.py`: probe every file), load its stream manifest,
  build the memory run's manifest (sha256 of every file) and open the run;
- week, resume: the same once the run and `files.json` exist (the stamps match: nothing is read);
- Video-MME, first plan and re-plan of --videos single-video streams; and `taskmem bench`'s
  whole reopen of that benchmark with every stream's run already complete (nothing memorized).

Target (issue 24): <= 2 s on identity for a resume of a complete 5,000-file week or a reopened
900-stream bench, on 2 cores.

    python benchmarks/perf/source_identity.py [--files 5000] [--file-mb 9] [--videos 900]
        [--video-mb 300] [--repeat 3] [--workdir /tmp/taskmem-identity]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

PARTICIPANT = "A1_JAKE"


def _template(workdir: Path) -> Path:
    """A tiny real 30 s H.264 video (64x36, 5 fps, moov first) that every file copies."""
    out = workdir / "template.mp4"
    if not out.exists():
        subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
             "testsrc=size=64x36:rate=5", "-t", "30", "-c:v", "libx264", "-preset",
             "ultrafast", "-movflags", "+faststart", str(out)],
            check=True,
        )  # fmt: skip
    return out


def _padded_copy(template: bytes, path: Path, size: int) -> None:
    if path.exists() and path.stat().st_size == size:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(template)
        fh.truncate(max(size, len(template)))  # a hole: reads as zeros, takes no disk


def make_week(workdir: Path, files: int, size: int) -> Path:
    """`files` 30 s videos laid end to end, 08:00-22:00 each day, as EgoLife names them."""
    template = _template(workdir).read_bytes()
    root = workdir / "egolife"
    per_day = 14 * 3600 // 30
    for i in range(files):
        day, slot = divmod(i, per_day)
        seconds = 8 * 3600 + slot * 30
        clock = f"{seconds // 3600:02d}{seconds % 3600 // 60:02d}{seconds % 60:02d}00"
        name = f"DAY{day + 1}_{PARTICIPANT}_{clock}.mp4"
        _padded_copy(template, root / PARTICIPANT / f"DAY{day + 1}" / name, size)
    return root


def make_videomme(workdir: Path, videos: int, size: int) -> Path:
    template = _template(workdir).read_bytes()
    root = workdir / "videomme"
    for i in range(videos):
        _padded_copy(template, root / "data" / f"v{i:04d}.mp4", size)
    return root


def _egolife_records():  # type: ignore[no-untyped-def]
    from taskmem_lab.bench import egolife

    row = {
        "ID": 1, "query_time": {"date": "DAY1", "time": "09000000"}, "type": "EventRecall",
        "question": "What did I do?", "choice_a": "a", "choice_b": "b", "choice_c": "c",
        "choice_d": "d", "answer": "A", "target_time": {"date": "DAY1", "time": "08300000"},
    }  # fmt: skip
    return egolife.from_rows([row], f"EgoLifeQA_{PARTICIPANT}.json")


def _videomme_rows(videos: int) -> list[dict]:
    return [
        {"video_id": f"{i:03d}", "duration": "long", "domain": "d", "sub_category": "s",
         "url": "", "videoID": f"v{i:04d}", "question_id": f"{i:03d}-1", "task_type": "Counting",
         "question": "How many?", "options": ["A. 1.", "B. 2.", "C. 3.", "D. 4."], "answer": "A"}
        for i in range(videos)
    ]  # fmt: skip


def child_week(videos: str, out: str) -> dict[str, float]:
    """Plan the week and open its memory run, as `taskmem bench` and `memorize` would."""
    from taskmem_lab.bench.plan import KnownFiles, plan_streams, write_sources
    from taskmem_lab.media.stream import load_stream
    from taskmem_lab.memorize import run_manifest
    from taskmem_lab.params import MemorizeParams
    from taskmem_lab.store import FolderLock, memory_dir, open_run, recall_source_digests

    params = MemorizeParams()
    root = Path(out)
    t0 = time.perf_counter()
    known = KnownFiles(root / "bench" / "egolife" / "files.json")
    plan = plan_streams("egolife", _egolife_records(), videos, params, "questions", known=known)
    source, _ = write_sources(plan, root / "bench" / "egolife" / "tag")[PARTICIPANT]
    t1 = time.perf_counter()
    stream = load_stream(source)
    run_path = memory_dir(root, PARTICIPANT, "tag")
    recall_source_digests(run_path)
    manifest = run_manifest(stream, "fake", params, [], "tag")
    with FolderLock(run_path, "memorize run"):
        run = open_run(run_path, manifest)
        run.update_manifest(status="complete")
    t2 = time.perf_counter()
    return {"plan_s": t1 - t0, "run_identity_s": t2 - t1, "total_s": t2 - t0,
            "files": len(stream.files), "clips": plan.clips}  # fmt: skip


def child_videomme(videos: str, out: str, count: int) -> dict[str, float]:
    """Plan Video-MME, then reopen the whole bench with every stream's run complete."""
    from taskmem_lab.bench import videomme
    from taskmem_lab.bench.plan import KnownFiles, plan_streams
    from taskmem_lab.bench_run import run_benchmark
    from taskmem_lab.params import MemorizeParams

    params = MemorizeParams()
    root = Path(out)
    records = videomme.from_rows(_videomme_rows(count), "generated")
    root.mkdir(parents=True, exist_ok=True)
    source = root / "videomme.json"
    source.write_text(json.dumps(_videomme_rows(count)))
    t0 = time.perf_counter()
    known = KnownFiles(root / "bench" / "videomme" / "files.json")
    plan = plan_streams("videomme", records, videos, params, known=known)
    t1 = time.perf_counter()
    for s in plan.streams:  # every stream complete, as after a finished run
        run = root / s.stream_id / "memory" / "tag"
        if not (run / "manifest.json").exists():
            run.mkdir(parents=True, exist_ok=True)
            (run / "manifest.json").write_text(
                json.dumps({"status": "complete", "clips_done": s.clips, "clips_total": s.clips})
            )
    t2 = time.perf_counter()
    result = run_benchmark(
        "videomme", source, videos, "fake", params=params, tag="tag", out=root, progress=False
    )
    t3 = time.perf_counter()
    skipped = sum(o.status == "skipped" for o in result.outcomes.values())
    return {"plan_s": t1 - t0, "bench_reopen_s": t3 - t2, "skipped": skipped}


def _run_child(*args: str) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False
    )
    if proc.returncode:
        raise SystemExit(f"child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _hash_rate(path: Path) -> float:
    from taskmem_lab.paths import _read_sha256

    t = time.perf_counter()
    _read_sha256(path, 1 << 20)
    return path.stat().st_size / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--file-mb", type=float, default=9.0, help="30 s of 1080p: about 9 MB")
    ap.add_argument("--videos", type=int, default=900)
    ap.add_argument("--video-mb", type=float, default=300.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/taskmem-identity"))
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, *rest = args.child
        figures = (
            child_week(*rest) if kind == "week" else child_videomme(rest[0], rest[1], int(rest[2]))
        )
        print(json.dumps(figures))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    week = make_week(args.workdir, args.files, int(args.file_mb * 2**20))
    mme = make_videomme(args.workdir, args.videos, int(args.video_mb * 2**20))
    rate = _hash_rate(next((week / PARTICIPANT / "DAY1").iterdir()))
    print(f"sha256 of a sparse {args.file_mb} MB file: {rate / 1e9:.2f} GB/s (one core)")
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    week_bytes = args.files * args.file_mb * 2**20
    print(f"week: {args.files} files, {week_bytes / 1e9:.1f} GB "
          f"(every byte read once: ~{week_bytes / rate:.0f} s at that rate)")  # fmt: skip
    for attempt in range(args.repeat):
        out = args.workdir / f"runs-{attempt}"
        shutil.rmtree(out, ignore_errors=True)
        first = _run_child("week", str(week), str(out))
        resumes = [_run_child("week", str(week), str(out)) for _ in range(3)]
        best = min(resumes, key=lambda r: r["total_s"])
        print(f"  week, first open: plan {first['plan_s']:.1f} s, run identity "
              f"{first['run_identity_s']:.1f} s; resume (best of 3, new process each): plan "
              f"{best['plan_s']:.2f} s, run identity {best['run_identity_s']:.2f} s, total "
              f"{best['total_s']:.2f} s (median {statistics.median(r['total_s'] for r in resumes):.2f} s)")  # fmt: skip
        shutil.rmtree(out, ignore_errors=True)
    print(f"Video-MME: {args.videos} videos, {args.videos * args.video_mb / 1e3:.0f} GB")
    for attempt in range(args.repeat):
        out = args.workdir / f"mme-{attempt}"
        shutil.rmtree(out, ignore_errors=True)
        first = _run_child("videomme", str(mme), str(out), str(args.videos))
        again = _run_child("videomme", str(mme), str(out), str(args.videos))
        print(f"  first plan {first['plan_s']:.2f} s; re-plan {again['plan_s']:.2f} s; whole "
              f"bench reopen ({int(again['skipped'])} complete streams skipped) "
              f"{again['plan_s'] + again['bench_reopen_s']:.2f} s")  # fmt: skip
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()

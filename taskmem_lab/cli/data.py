"""`taskmem publish` (a benchmark as a Hugging Face dataset) and `taskmem import` (memories of the
original TaskMem tool as run directories)."""

from __future__ import annotations

import argparse
from pathlib import Path


def publish_command(args: argparse.Namespace) -> int:
    from taskmem_lab.bench.hub import publish, push
    from taskmem_lab.paths import runs_root

    out = Path(args.out) if args.out else runs_root() / "publish" / args.benchmark
    pub = publish(args.benchmark, args.source, out, card=args.card)
    print(
        f"dataset: {pub.folder} ({pub.rows} questions; config {pub.name}, split test, "
        f"{len(pub.files)} parquet shard(s), card README.md)"
    )
    if not args.push:
        print(
            f"dry run, nothing uploaded: check it with datasets.load_dataset('{pub.folder}', "
            f"'{pub.name}', split='test'), then add --push ORG/NAME"
        )
        return 0
    url = push(pub.folder, args.push, private=args.private)
    print(f"pushed to https://huggingface.co/datasets/{args.push} ({url})")
    return 0


def import_command(args: argparse.Namespace) -> int:
    from taskmem_lab.memory import import_memories
    from taskmem_lab.paths import runs_root

    out = args.out or runs_root()
    done = import_memories(
        args.folder,
        args.tag,
        out,
        new_tag=args.as_tag,
        test_time=args.test_time,
        interval=args.interval,
    )
    for item in done:
        state = "imported" if item.new else "already imported"
        print(f"{item.video_id}: {item.entries} entries {state} -> {item.run}")
    print(f"{len(done)} memories; evaluate with --memories {out} --tag {args.as_tag or args.tag}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `publish` and `import`."""
    from taskmem_lab.bench import BENCHMARKS

    p = sub.add_parser("publish", help="convert a benchmark into a Hugging Face dataset")
    p.add_argument("benchmark", choices=sorted(BENCHMARKS), help="benchmark name")
    p.add_argument("--source", help="original source (default: the original on the Hub)")
    p.add_argument("--out", help="dataset folder (default: runs/publish/<benchmark>)")
    p.add_argument("--card", help="dataset card (default: benchmarks/<benchmark>/README.md)")
    p.add_argument("--push", metavar="REPO_ID", help="upload to this Hub dataset repo (HF_TOKEN)")
    p.add_argument("--private", action="store_true", help="create the Hub repo as private")
    p.set_defaults(func=publish_command)

    im = sub.add_parser(
        "import", help="original TaskMem memory pickles -> run directories (runs/<id>/memory/<tag>)"
    )
    im.add_argument(
        "folder", help="folder of <video_id>/<video_id>_<tag>.pkl (the original layout)"
    )
    im.add_argument("--tag", required=True, help="tag in the pickle names (e.g. taskmem_ep)")
    im.add_argument("--as", dest="as_tag", help="tag of the runs written (default: --tag)")
    im.add_argument("--out", help="runs root to write (default: the runs root, ./runs)")
    im.add_argument("--test-time", action="store_true", help="read <video_id>/test_time/ pickles")
    im.add_argument("--interval", type=float, help="seconds per clip when a pickle has none (10)")
    im.set_defaults(func=import_command)

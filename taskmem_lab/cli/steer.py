"""`taskmem adapt-export`: a steer file and its base model as a Phase-Two checkpoint.

    taskmem adapt-export --model hf:/models/Qwen3-VL-8B --steer runs/adapt/steer.pt \\
        --out /models/Qwen3-VL-8B-taskmem --scale-layer 22 --scale 1.5

The checkpoint is the base folder (weights hard-linked) plus one `adapter.steer` weight per
steered layer and `adapter_layers` in its text config (`backends.steer`, docs/training.md);
`hf:OUT` and `VLLM_PLUGINS=taskmem_steer vllm serve OUT` apply the steer.
"""

from __future__ import annotations

import argparse

from taskmem_lab.backends.steer import SteerExportParams
from taskmem_lab.cli.options import add_options, params_from


def adapt_export_command(args: argparse.Namespace) -> int:
    from taskmem_lab.backends.hf import base_folder
    from taskmem_lab.backends.steer import load_steer, read_checkpoint_steer

    base = base_folder(args.model)
    out = params_from(SteerExportParams, args).export(base, load_steer(args.steer), args.out)
    layers = [i for i, row in enumerate(read_checkpoint_steer(out)) if bool(row.any())]
    print(f"checkpoint: {out} (base {base}; adapter layers {layers})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `adapt-export`."""
    e = sub.add_parser("adapt-export", help="a steer file and its base model as a checkpoint")
    e.add_argument("--model", required=True, help="base checkpoint, hf:DIR or a cached hf:HUB_ID")
    e.add_argument("--steer", required=True, help="steer file ({'matrix': [layers, hidden]})")
    e.add_argument("--out", required=True, help="new checkpoint folder (must be empty)")
    add_options(e, SteerExportParams)
    e.set_defaults(func=adapt_export_command)

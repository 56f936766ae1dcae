"""Steer training (`taskmem adapt`): measured on a tiny model on CPU, computed for real sizes.

1. Measured: a tiny random-weight Idefics3 (`testing.tiny_vlm`, 2 layers, hidden 32) trains a
   steer on generated pairs with a learnable signal (`testing.preference_pairs`: chosen entries
   name the person and object asked about, rejected ones are vague; held-out prompts and
   sentences unseen). Prints held-out reward accuracy, mean margin rise and seconds per step, for
   the settings the test uses and for the public recipe (lr 1e-3, 10 steps).
2. Computed (no GPU, no hub access): for Qwen3-VL-8B and Qwen3-VL-30B-A3B, from their published
   configs written below, the GPU memory and the time of one DPO step of steer-only training
   with gradient checkpointing, for one clip request at the memorizer's defaults (10 s clips, a
   50 s window at 1 frame/s capped at 32 frames, frames at most 640 px): does it fit one 80 GB
   GPU? The figures are arithmetic on the configs (weights, kept activations, the recomputed
   layer's peak, logits of the completion only); the time assumes a model-FLOP utilisation
   (`--mfu`, 35% dense, 15% for the MoE's expert loop) of an H100's 989 bf16 TFLOP/s.

    python benchmarks/perf/adapt.py [--skip-tiny] [--pairs 40] [--seeds 0 1 2] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

GiB = 1024**3
H100_BF16 = 989e12


@dataclass(frozen=True)
class Decoder:
    """The text decoder of a Qwen3-VL checkpoint (config.json's text_config)."""

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    intermediate: int = 0  # dense MLP
    experts: int = 0  # MoE: experts, experts per token, expert width
    top_k: int = 0
    expert_width: int = 0
    vision_params: float = 0.58e9  # the ViT (depth 27, width 1152) and its mergers
    mfu: float = 0.35

    def attention_params(self) -> int:
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return 2 * self.hidden * q + 2 * self.hidden * kv

    def mlp_params(self, active: bool) -> int:
        if self.experts:
            n = self.top_k if active else self.experts
            return n * 3 * self.hidden * self.expert_width + self.hidden * self.experts
        return 3 * self.hidden * self.intermediate

    def params(self, active: bool = False) -> float:
        layer = self.attention_params() + self.mlp_params(active)
        return self.layers * layer + 2 * self.vocab * self.hidden + self.vision_params

    def layer_peak_values(self, tokens: int) -> float:
        """Values alive while one checkpointed layer is recomputed and back-propagated."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        attn = tokens * (4 * self.hidden + 2 * q + 2 * kv)
        if self.experts:
            mlp = tokens * (self.top_k * 3 * self.expert_width + self.experts + 2 * self.hidden)
        else:
            mlp = tokens * (3 * self.intermediate + 2 * self.hidden)
        return attn + mlp


QWEN3_VL_8B = Decoder(
    "Qwen3-VL-8B",
    layers=36,
    hidden=4096,
    heads=32,
    kv_heads=8,
    head_dim=128,
    vocab=151936,
    intermediate=12288,
)
QWEN3_VL_30B_A3B = Decoder(
    "Qwen3-VL-30B-A3B",
    layers=48,
    hidden=2048,
    heads=32,
    kv_heads=4,
    head_dim=128,
    vocab=151936,
    experts=128,
    top_k=8,
    expert_width=768,
    vision_params=0.54e9,
    mfu=0.15,
)


def request_tokens(video_native: bool) -> tuple[int, int]:
    """(prompt tokens, completion tokens) of one clip request at the memorizer's defaults."""
    from taskmem_lab.params import MemorizeParams

    p = MemorizeParams()
    frames = min(p.max_frames, math.ceil(p.context_duration * p.frame_fps))
    # Qwen3-VL: 16-pixel patches merged 2x2, sides rounded to multiples of 32; a 16:9 frame at
    # 640 px is 640x352 -> 20 x 11 tokens. Native video also pairs frames (temporal patch 2).
    per_frame = (640 // 32) * round(640 * 9 / 16 / 32)
    if video_native:
        visual = per_frame * math.ceil(frames / 2) + 8 * math.ceil(frames / 2)  # + timestamps
    else:
        visual = (per_frame + 10) * frames  # + a "Frame at HH:MM:SS.s" label per frame
    preceding = round((p.context_duration - p.interval) / p.interval) * 150  # earlier entries
    text = 1744 // 4 + preceding + 100  # prompt files (~4 chars a token), tasks, scaffolding
    return visual + text, 256


def estimate(d: Decoder, steer_layer: int, prompt: int, completion: int, batch: int) -> dict:
    """GPU memory (GiB) and seconds per DPO step of steer-only training, checkpointing on."""
    seq = prompt + completion
    weights = 2 * d.params()
    top = d.layers - steer_layer  # layers the gradient flows through (the steered one and up)
    kept = top * seq * d.hidden * 2  # each checkpointed layer keeps its input (bf16)
    recompute = 2 * d.layer_peak_values(seq)
    logits = (completion + 1) * d.vocab * (2 + 4 + 4)  # bf16 logits, fp32 copy, log-softmax
    vision = 2 * 16 * 880 * 1152 * 12  # the ViT's widest activations for one window, no grad
    steer = 4 * 4 * d.layers * d.hidden  # fp32 parameter, gradient, Adam moments
    overhead = 3 * GiB  # CUDA context, allocator slack
    total = weights + kept + recompute + logits + vision + steer + overhead
    no_ckpt = weights + top * d.layer_peak_values(seq) * 2 + logits + vision + overhead
    attention = 4 * seq * d.layers * d.heads * d.head_dim  # per token, causal ~ half of 2x
    fwd = seq * (2 * d.params(active=True) + attention / 2)
    per_sequence = fwd + 3 * fwd * top / d.layers  # forward, then recompute + backward above
    step_flops = batch * 2 * per_sequence  # chosen and rejected, each with its prompt
    ref_flops = 2 * fwd  # once per pair for the whole run (no grad)
    speed = H100_BF16 * d.mfu
    return {
        "model": d.name,
        "params_b": d.params() / 1e9,
        "seq": seq,
        "weights_gib": weights / GiB,
        "activations_gib": (kept + recompute + logits + vision) / GiB,
        "total_gib": total / GiB,
        "no_checkpointing_gib": no_ckpt / GiB,
        "fits_80gb": total < 80e9,
        "step_s": step_flops / speed,
        "ref_s_per_pair": ref_flops / speed,
    }


def tiny_runs(work: Path, pairs: int, seeds: list[int]) -> None:
    from taskmem_lab.testing.preference_pairs import write_signal_pairs
    from taskmem_lab.testing.tiny_vlm import build_tiny_idefics3
    from taskmem_lab.training.adapt import AdaptParams, adapt

    shutil.rmtree(work, ignore_errors=True)
    model = build_tiny_idefics3(work / "model")
    spec = f"hf:{model}?device=cpu"
    settings = {
        "test settings (lr 0.03, 20 steps, batch 4)": {"lr": 0.03, "steps": 20, "batch_size": 4},
        "public recipe (lr 1e-3, 10 steps, batch 8)": {"lr": 1e-3, "steps": 10, "batch_size": 8},
    }
    print("tiny Idefics3 (2 layers, hidden 32), steer on layer 1, 30% of prompts held out:")
    for seed in seeds:
        file = write_signal_pairs(work / f"pairs_{seed}.jsonl", pairs, seed=seed)
        for label, kwargs in settings.items():
            params = AdaptParams(layers=(1,), holdout=0.3, seed=seed, **kwargs)
            started = time.perf_counter()
            out = work / f"out_{seed}_{kwargs['lr']}"
            s = adapt(spec, file, out, params, progress=False)
            held = s["held_out"]
            print(
                f"  seed {seed}, {label}: held-out reward accuracy "
                f"{held['reward_accuracy']:.0%} of {held['pairs']}, mean margin rise "
                f"{held['mean_margin_rise']:+.3f} nats, {s['seconds_per_step']:.3f} s/step "
                f"({time.perf_counter() - started:.1f} s with loading and scoring)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-tiny", action="store_true", help="only the computed figures")
    parser.add_argument("--pairs", type=int, default=40, help="generated pairs per run (40)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="(0 1 2)")
    parser.add_argument("--workdir", default="/tmp/taskmem-perf-adapt")
    parser.add_argument("--batch", type=int, default=8, help="pairs per DPO step (8)")
    args = parser.parse_args()
    if not args.skip_tiny:
        tiny_runs(Path(args.workdir), args.pairs, args.seeds)
    print(
        f"\ncomputed: steer on layer 22, one DPO step = {args.batch} pairs, bf16 weights, "
        "gradient checkpointing, completion logits only"
    )
    for native in (True, False):
        prompt, completion = request_tokens(native)
        mode = "native video (frames paired)" if native else "one image per frame"
        print(f"clip request as {mode}: {prompt} prompt + {completion} completion tokens")
        for d in (QWEN3_VL_8B, QWEN3_VL_30B_A3B):
            e = estimate(d, 22, prompt, completion, args.batch)
            print(
                f"  {e['model']:18} {e['params_b']:.1f} B params: weights {e['weights_gib']:.1f}"
                f" GiB + activations {e['activations_gib']:.1f} GiB = {e['total_gib']:.1f} GiB "
                f"({'fits' if e['fits_80gb'] else 'does NOT fit'} one 80 GB GPU; without "
                f"checkpointing ~{e['no_checkpointing_gib']:.0f} GiB); ~{e['step_s']:.0f} s per "
                f"step at {d.mfu:.0%} MFU, reference pass ~{e['ref_s_per_pair']:.1f} s per pair"
            )


if __name__ == "__main__":
    main()

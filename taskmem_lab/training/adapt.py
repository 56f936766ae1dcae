"""Steer training by DPO (TaskMem's Phase Two): `taskmem adapt`, the base model frozen.

Floor 5. `adapt(model, pairs, out, params)` loads an `hf:` model, freezes every base weight and
hooks one trainable steer matrix `[num_layers, hidden]` onto the decoder layers named in
`AdaptParams.layers` (`backends.steer.attach_steer`). The reference policy is the same model with
the hooks switched off (`SteerHandle.disabled()`): no second copy of the weights; its log-probs
are computed once, before the first step. Each step takes `batch_size` training pairs and
minimises DPO's sigmoid loss

    -logsigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))

on completion log-probs summed over tokens. Prompts are tokenized as the `hf` backend tokenizes
them when it generates (`hf.chat_messages` and the processor's chat template), so the steer is
trained on the token stream it is later applied to.

The output folder:

- `adapt.json` (settings; a rerun with other settings is refused), `steps.jsonl` (one row per
  step: loss, reward accuracy, chosen / rejected rewards, margin, as TRL's DPO logs them);
- `checkpoint.pt` (steer, optimizer, step, RNG state), rewritten atomically after each step, so a
  killed run resumes at the step after its last stored one (batches are a function of the seed
  and the step);
- `steer.pt` (`{"matrix": [num_layers, hidden]}`, zero outside `layers`), `summary.json`
  (held-out reward accuracy and mean margin rise) and `curves.png`.

A folder lock (`store.FolderLock`) keeps a second process out while one trains.
"""

from __future__ import annotations

import inspect
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskmem_lab.errors import ConfigError, ModelError, StoreError
from taskmem_lab.jobs import SUMMARY, ResumableDir
from taskmem_lab.params import check_param
from taskmem_lab.schema import SCHEMA_VERSION
from taskmem_lab.store import atomic_file, locked
from taskmem_lab.training.preference import (
    PreferencePair,
    batch_indices,
    load_pairs,
    pair_file,
    pairs_digest,
    split_pairs,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from taskmem_lab.backends.hf import HFModel, Loaded

STEER_FILE = "steer.pt"
CHECKPOINT = "checkpoint.pt"
FIGURE = "curves.png"


@dataclass(frozen=True)
class AdaptParams:
    """Parameters of steer training (defaults: the public TaskMem release recipe).

    Attributes:
        layers: decoder layers that get a trainable steer vector (0-based).
        beta: DPO's KL coefficient (the temperature of the implicit reward).
        lr: Adam learning rate of the steer vectors.
        steps: optimizer steps.
        batch_size: preference pairs per step.
        holdout: share of the prompts whose pairs are kept out of training and evaluated.
        seed: seed of the held-out split and of the batch order.
        gradient_checkpointing: recompute activations in the backward pass (long clips on GPU).
    """

    layers: tuple[int, ...] = (22,)
    beta: float = 0.1
    lr: float = 1e-3
    steps: int = 10
    batch_size: int = 8
    holdout: float = 0.2
    seed: int = 0
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        layers = tuple(sorted({int(i) for i in self.layers}))
        object.__setattr__(self, "layers", layers)
        check_param(bool(layers), "layers", "name at least one decoder layer, e.g. 22")
        check_param(all(i >= 0 for i in layers), "layers", f"must be >= 0, got {list(layers)}")
        check_param(self.beta > 0, "beta", f"must be > 0, got {self.beta}")
        check_param(0 < self.lr <= 10, "lr", f"must be in (0, 10], got {self.lr}")
        check_param(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        check_param(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check_param(0 <= self.holdout < 1, "holdout", f"must be in [0, 1), got {self.holdout}")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["layers"] = list(self.layers)
        return data


# --------------------------------------------------------------------------- tokens


@dataclass
class Encoded:
    """A pair's prompt inputs (processor output) and its two completions' token ids."""

    prompt: dict[str, Any]
    chosen: Any
    rejected: Any


def _completion_ids(loaded: Loaded, text: str) -> Any:
    """Token ids of a completion, ended by the end-of-turn (eos) token as generation ends."""
    torch = loaded.torch
    tokenizer = loaded.processor.tokenizer
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        ids = [*ids, tokenizer.eos_token_id]
    return torch.tensor([ids], dtype=torch.long)


def encode_pair(loaded: Loaded, pair: PreferencePair) -> Encoded:
    """The pair's prompt as the `hf` backend formats it, and its completions' token ids."""
    from taskmem_lab.backends.hf import encode_request

    try:
        inputs = encode_request(loaded, pair.request)
    except ModelError as exc:
        raise ConfigError(f"pair {pair.id}: {exc}") from exc
    return Encoded(
        dict(inputs), _completion_ids(loaded, pair.chosen), _completion_ids(loaded, pair.rejected)
    )


def _accepts(model: Any, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def completion_logp(loaded: Loaded, prompt: Mapping[str, Any], completion: Any) -> Any:
    """Summed log-probability of `completion` after `prompt` (a 0-d tensor, with grad if any)."""
    torch, model = loaded.torch, loaded.model
    ids = prompt["input_ids"]
    full = torch.cat([ids, completion], dim=1).to(loaded.device)
    count = int(completion.shape[1])
    kwargs: dict[str, Any] = {}
    for key, value in prompt.items():
        if key in ("input_ids", "attention_mask"):
            continue
        if hasattr(value, "to"):
            value = value.to(loaded.device)
            if value.is_floating_point():
                value = value.to(model.dtype)
        kwargs[key] = value
    if "mm_token_type_ids" in kwargs or "token_type_ids" in kwargs:
        for key in ("mm_token_type_ids", "token_type_ids"):
            if key in kwargs:  # text tokens appended after the prompt are type 0
                pad = torch.zeros((1, count), dtype=kwargs[key].dtype, device=loaded.device)
                kwargs[key] = torch.cat([kwargs[key], pad], dim=1)
    keep = _accepts(model, "logits_to_keep")
    if keep:
        kwargs["logits_to_keep"] = count + 1
    out = model(
        input_ids=full,
        attention_mask=torch.ones_like(full),
        use_cache=False,
        **kwargs,
    )
    logits = out.logits[:, -(count + 1) : -1] if keep else out.logits[:, ids.shape[1] - 1 : -1]
    logp = logits.float().log_softmax(-1)
    target = completion.to(loaded.device)
    return logp.gather(-1, target.unsqueeze(-1)).squeeze(-1).sum()


def pair_logps(loaded: Loaded, pair: PreferencePair) -> tuple[Any, Any]:
    """(chosen, rejected) summed completion log-probs of one pair under the model as it is now.

    The pair is encoded here, each time: holding every pair's pixels for a whole run would cost
    tens of GB for long clips, and encoding is cheap next to the forward pass.
    """
    enc = encode_pair(loaded, pair)
    return (
        completion_logp(loaded, enc.prompt, enc.chosen),
        completion_logp(loaded, enc.prompt, enc.rejected),
    )


# --------------------------------------------------------------------------- DPO


def dpo_terms(beta: float, pi_c: Any, pi_r: Any, ref_c: Any, ref_r: Any) -> tuple[Any, Any, Any]:
    """(loss, chosen reward, rejected reward) of DPO's sigmoid loss, tensor by tensor."""
    import torch.nn.functional as F

    chosen = beta * (pi_c - ref_c)
    rejected = beta * (pi_r - ref_r)
    return -F.logsigmoid(chosen - rejected), chosen, rejected


def step_row(step: int, loss: float, chosen: Sequence[float], rejected: Sequence[float]) -> dict:
    """A `steps.jsonl` row with TRL's metrics: rewards/accuracies = share of pairs whose
    chosen reward beats the rejected one."""
    n = len(chosen)
    return {
        "schema": SCHEMA_VERSION,
        "step": step,
        "status": "ok",
        "loss": loss,
        "reward_accuracy": sum(c > r for c, r in zip(chosen, rejected, strict=True)) / n,
        "chosen_reward": sum(chosen) / n,
        "rejected_reward": sum(rejected) / n,
        "margin": sum(c - r for c, r in zip(chosen, rejected, strict=True)) / n,
        "pairs": n,
    }


def evaluate_pairs(
    loaded: Loaded,
    pairs: Sequence[PreferencePair],
    reference: Sequence[tuple[float, float]],
) -> dict[str, Any]:
    """Reward accuracy and mean margin rise of the steered model against the reference.

    A pair's margin rise is `(pi_c - pi_r) - (ref_c - ref_r)` in nats (summed log-probs); reward
    accuracy is the share of pairs whose rise is positive (TRL's rewards/accuracies).
    """
    if not pairs:
        return {"pairs": 0, "reward_accuracy": None, "mean_margin_rise": None}
    torch = loaded.torch
    rises = []
    with torch.no_grad():
        for pair, (ref_c, ref_r) in zip(pairs, reference, strict=True):
            pi_c, pi_r = pair_logps(loaded, pair)
            rises.append((float(pi_c) - float(pi_r)) - (ref_c - ref_r))
    return {
        "pairs": len(rises),
        "reward_accuracy": sum(r > 0 for r in rises) / len(rises),
        "mean_margin_rise": sum(rises) / len(rises),
    }


def reference_logps(
    loaded: Loaded, pairs: Sequence[PreferencePair], handle: Any
) -> list[tuple[float, float]]:
    """(ref_c, ref_r) per pair: the same model with the steer switched off."""
    torch = loaded.torch
    out = []
    with torch.no_grad(), handle.disabled():
        for pair in pairs:
            chosen, rejected = pair_logps(loaded, pair)
            out.append((float(chosen), float(rejected)))
    return out


# --------------------------------------------------------------------------- the run


def adapt_dir(path: str | Path) -> ResumableDir:
    """The adapt folder: `adapt.json` (settings) and `steps.jsonl` (one row per step)."""
    return ResumableDir(
        Path(path),
        kind="adapt",
        key=lambda row: int(row["step"]),
        settings_name="adapt.json",
        rows_name="steps.jsonl",
        hint="pass another --out, or delete the folder to start over",
    )


def _hf_model(model: str | HFModel) -> HFModel:
    from taskmem_lab.backends.hf import HFModel, from_spec

    if isinstance(model, HFModel):
        return model
    if not isinstance(model, str) or not model.startswith("hf:"):
        raise ConfigError(
            f"taskmem adapt trains a steer on a local transformers model: give an hf: spec "
            f"(hf:DIR or hf:HUB_ID), got {model!r}"
        )
    hf = from_spec(model[3:])
    if hf.applied_steer() is not None:
        raise ConfigError(
            f"{model} adds a steer; train from the base model without one (the reference "
            "policy is the base with no steer)"
        )
    return hf


@dataclass
class Trainer:
    """The mutable state of one run: frozen model, steer parameter, optimizer, hooks."""

    loaded: Loaded
    params: AdaptParams
    steer: Any
    optimizer: Any
    handle: Any
    frozen: list[tuple[Any, bool]]

    @classmethod
    def start(cls, loaded: Loaded, params: AdaptParams) -> Trainer:
        from taskmem_lab.backends.steer import attach_steer, text_config

        torch, model = loaded.torch, loaded.model
        text = text_config(model)
        num_layers, hidden = int(text.num_hidden_layers), int(text.hidden_size)
        bad = [i for i in params.layers if i >= num_layers]
        if bad:
            raise ConfigError(
                f"parameter 'layers': {bad} out of range; the model has {num_layers} decoder "
                f"layers (0..{num_layers - 1})"
            )
        frozen = [(p, p.requires_grad) for p in model.parameters()]
        for p, _ in frozen:
            p.requires_grad_(False)
        steer = torch.nn.Parameter(torch.zeros(num_layers, hidden, device=loaded.device))
        optimizer = torch.optim.Adam([steer], lr=params.lr)
        if params.gradient_checkpointing:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
            model.train()  # transformers checkpoints only in training mode
        handle = attach_steer(model, steer, layers=params.layers)
        return cls(loaded, params, steer, optimizer, handle, frozen)

    def close(self) -> None:
        """Take the hooks off and give the base weights back as they were."""
        self.handle.remove()
        for p, flag in self.frozen:
            p.requires_grad_(flag)
        if self.params.gradient_checkpointing:
            self.loaded.model.gradient_checkpointing_disable()
        self.loaded.model.eval()

    def load(self, path: Path) -> int:
        """Restore a checkpoint; the number of steps it holds (0 without one)."""
        torch = self.loaded.torch
        if not path.is_file():
            return 0
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            with torch.no_grad():
                self.steer.copy_(state["matrix"].to(self.steer.device))
            self.optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["torch_rng"])
            return int(state["step"])
        except (RuntimeError, KeyError, ValueError, EOFError) as exc:
            raise StoreError(
                f"{path} cannot be resumed from ({type(exc).__name__}: {exc}); delete it to "
                "start the steps over"
            ) from None

    def save(self, path: Path, step: int) -> None:
        torch = self.loaded.torch
        state = {
            "step": step,
            "matrix": self.steer.detach().cpu(),
            "optimizer": self.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
        with atomic_file(path, "wb") as fh:
            torch.save(state, fh)

    def step(
        self,
        step: int,
        batch: Sequence[PreferencePair],
        reference: Sequence[tuple[float, float]],
    ) -> dict[str, Any]:
        """One optimizer step on `batch`; its `steps.jsonl` row (metrics before the update)."""
        torch = self.loaded.torch
        started = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        total, chosen, rejected = 0.0, [], []
        for pair, (ref_c, ref_r) in zip(batch, reference, strict=True):
            pi_c, pi_r = pair_logps(self.loaded, pair)
            loss, c, r = dpo_terms(self.params.beta, pi_c, pi_r, ref_c, ref_r)
            (loss / len(batch)).backward()
            total += float(loss.detach()) / len(batch)
            chosen.append(float(c.detach()))
            rejected.append(float(r.detach()))
        if not torch.isfinite(self.steer.grad).all():
            raise ConfigError(
                f"step {step}: the steer's gradient is not finite; lower --lr or --beta"
            )
        self.optimizer.step()
        row = step_row(step, total, chosen, rejected)
        row["seconds"] = time.perf_counter() - started
        return row

    def matrix(self) -> Any:
        """The trained steer on CPU, zero outside `layers`."""
        torch = self.loaded.torch
        out = torch.zeros_like(self.steer.detach().cpu())
        index = torch.tensor(self.params.layers, dtype=torch.long)
        out[index] = self.steer.detach().cpu()[index]
        return out


def settings_of(
    model: HFModel, file: Path, pairs: Sequence[PreferencePair], params: AdaptParams
) -> dict[str, Any]:
    return {
        "model": model.model_id,
        "pairs_file": str(file.resolve()),
        "pairs": pairs_digest(pairs),
        "params": params.to_json(),
    }


def _progress(total: int, initial: int, enabled: bool) -> Any:
    from taskmem_lab.jobs import Progress

    return Progress("adapt", total=total, initial=initial, unit="step", enabled=enabled).bar()


def adapt(
    model: str | HFModel,
    pairs: str | Path,
    out: str | Path,
    params: AdaptParams = AdaptParams(),
    progress: bool = True,
) -> dict[str, Any]:
    """Train a steer by DPO on a pair file; resumes a killed run in the same folder.

    Returns the summary (also `out/summary.json`): held-out and training reward accuracy and
    mean margin rise, the steer's per-layer norms, seconds per step, and the files written.
    """
    from taskmem_lab.backends.steer import nonzero_layers, save_steer

    hf = _hf_model(model)
    file = pair_file(pairs)
    all_pairs = load_pairs(file)
    train, held = split_pairs(all_pairs, params.holdout, params.seed)
    root = Path(out)
    with locked(root, "adapt"):
        store = adapt_dir(root).open(settings_of(hf, file, all_pairs, params))
        finished = finished_summary(root, params.steps)
        if finished is not None:  # a rerun of a complete run: nothing to train or score
            return store.write_summary(finished, "complete")
        loaded = hf.load()
        with loaded.lock:  # no generation on these weights while the hooks are on
            trainer = Trainer.start(loaded, params)
            try:
                summary = _train(trainer, store, root, train, held, progress)
            finally:
                trainer.close()
        matrix = trainer.matrix()
        save_steer(matrix, root / STEER_FILE)
        rows = [r for r in read_steps(root) if int(r["step"]) <= params.steps]
        figure = adapt_figure(rows, summary)
        with atomic_file(root / FIGURE, "wb") as fh:
            figure.savefig(fh, format="png", dpi=100)
        summary.update(
            model=hf.model_id,
            steer_file=str(root / STEER_FILE),
            figure=str(root / FIGURE),
            steered_layers=list(nonzero_layers(matrix)),
            layer_norms={str(i): float(matrix[i].norm()) for i in params.layers},
            seconds_per_step=(
                sum(float(r.get("seconds", 0.0)) for r in rows) / len(rows) if rows else None
            ),
        )
        return store.write_summary(summary, "complete")


def finished_summary(root: Path, steps: int) -> dict[str, Any] | None:
    """The stored summary of a run whose checkpoint holds all `steps`, else None."""
    import torch

    summary, checkpoint = root / SUMMARY, root / CHECKPOINT
    if not (summary.is_file() and checkpoint.is_file() and (root / STEER_FILE).is_file()):
        return None
    try:
        done = int(torch.load(checkpoint, map_location="cpu", weights_only=True)["step"])
        data = json.loads(summary.read_text(encoding="utf-8"))
    except (RuntimeError, KeyError, ValueError, EOFError, OSError):
        return None  # unreadable: train and score again from what the checkpoint holds
    return data if done == steps and isinstance(data, dict) else None


def _train(
    trainer: Trainer,
    store: ResumableDir,
    root: Path,
    train: Sequence[PreferencePair],
    held: Sequence[PreferencePair],
    progress: bool,
) -> dict[str, Any]:
    params, loaded = trainer.params, trainer.loaded
    train_ref = reference_logps(loaded, train, trainer.handle)
    held_ref = reference_logps(loaded, held, trainer.handle)
    done = trainer.load(root / CHECKPOINT)
    if done > params.steps:
        raise StoreError(
            f"{root / CHECKPOINT} holds {done} steps, more than --steps {params.steps}; pass "
            "another --out to train a shorter run"
        )
    bar = _progress(params.steps, done, progress)
    try:
        for step in range(done, params.steps):
            index = batch_indices(len(train), params.batch_size, params.seed, step)
            row = trainer.step(step + 1, [train[i] for i in index], [train_ref[i] for i in index])
            store.append(row)  # before the checkpoint: a kill between the two redoes the step
            trainer.save(root / CHECKPOINT, step + 1)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['reward_accuracy']:.2f}")
    finally:
        bar.close()
    return {
        "schema": SCHEMA_VERSION,
        "out": str(root),
        "steps": params.steps,
        "train_pairs": len(train),
        "held_out_pairs": len(held),
        "held_out": evaluate_pairs(loaded, held, held_ref),
        "train": evaluate_pairs(loaded, train, train_ref),
        "params": params.to_json(),
    }


# --------------------------------------------------------------------------- the figure


def adapt_figure(rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> Figure:
    """Loss, reward accuracy and rewards per step, on a bare matplotlib `Figure` (no pyplot)."""
    from matplotlib.figure import Figure

    steps = [int(r["step"]) for r in rows]
    fig = Figure(figsize=(11, 3.2), layout="constrained")
    loss, acc, rew = fig.subplots(1, 3)
    loss.plot(steps, [r["loss"] for r in rows], marker="o")
    loss.axhline(math.log(2), color="grey", linestyle=":", label="log 2 (no preference)")
    loss.set(title="DPO loss", xlabel="step")
    loss.legend(fontsize=8)
    acc.plot(steps, [r["reward_accuracy"] for r in rows], marker="o", label="train batch")
    held = (summary.get("held_out") or {}).get("reward_accuracy")
    if held is not None:
        acc.axhline(held, color="C3", linestyle="--", label=f"held out, final ({held:.0%})")
    acc.set(title="reward accuracy", xlabel="step", ylim=(-0.05, 1.05))
    acc.legend(fontsize=8)
    for key, label in (
        ("chosen_reward", "chosen"),
        ("rejected_reward", "rejected"),
        ("margin", "margin"),
    ):
        rew.plot(steps, [r[key] for r in rows], marker="o", label=label)
    rew.axhline(0, color="grey", linewidth=0.8)
    rew.set(title="implicit rewards (beta x log-ratio)", xlabel="step")
    rew.legend(fontsize=8)
    return fig


def read_steps(out: str | Path) -> list[dict[str, Any]]:
    """The kept row of every stored step of an adapt folder, in step order."""
    store = adapt_dir(out)
    if not store.exists():
        raise StoreError(f"{out} is not an adapt folder (no adapt.json)")
    return [r for _, r in sorted(store.good().items())]

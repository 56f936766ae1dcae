"""Steer adapters: one vector per text decoder layer, added to that layer's output hidden states.

Floor 2, the one steer representation every local backend applies (TaskMem's Phase Two). A steer
is a float matrix `[num_hidden_layers, hidden_size]`; row `i` is added to the output of decoder
layer `i` (`hidden + scale * steer[i]`, every token position). It lives in two places:

- a *steer file*: a torch file holding `{"matrix": Tensor[num_layers, hidden]}` (`save_steer`,
  `load_steer`; read with `weights_only=True`, so no code is ever unpickled);
- a *Phase-Two checkpoint*: an ordinary Hugging Face folder whose text config carries
  `adapter_layers` (`"all"`, `"none"` or a list of layer indices) and whose weights hold one vector
  per adapted layer named `<prefix>layers.<i>.adapter.steer`; the prefix is the one the base
  checkpoint's own text layers use (`model.language_model.` for Qwen3-VL, as the public TaskMem
  checkpoints; `model.text_model.` for Idefics3/SmolVLM). `read_checkpoint_steer` reads those
  vectors from the safetensors headers and shards without loading the model, and
  `export_checkpoint` writes such a folder from a base one (its weights hard-linked or copied).

`attach_steer(model, matrix)` puts forward hooks on the decoder layers of any transformers VLM or
causal LM (`decoder_layers` finds them). The hooks *reference* the matrix, so it may be a trainable
`nn.Parameter`; `SteerHandle.disabled()` switches them off, so one model is its own zero-steer
reference policy. `steer_identity` hashes the steer actually applied, for endpoint identities and
response-cache keys.

torch (and safetensors for checkpoints) are imported inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskmem_lab.errors import SteerError
from taskmem_lab.store import atomic_file, atomic_write_json

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

STEER_SUFFIX = "adapter.steer"
ADAPTER_LAYERS = "adapter_layers"  # the text-config key of a Phase-Two checkpoint
STEER_SHARD = "adapter-steer.safetensors"
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
BASE_SHARD = "model-base.safetensors"  # a single-file base, linked under a name transformers
# does not prefer over the index
# Module paths of the text decoder layers, tried in order; others are found by search.
LAYER_PATHS = (
    "model.language_model.layers",  # Qwen2.5-VL, Qwen3-VL, Qwen3-VL-MoE (transformers >= 4.52)
    "language_model.model.layers",  # older Qwen-VL / LLaVA layouts
    "model.text_model.layers",  # Idefics3, SmolVLM
    "model.layers",  # causal LMs (Llama, Qwen2/3, ...)
    "language_model.layers",
    "transformer.h",  # GPT-2 style
)
_NOT_TEXT = ("vision", "visual", "audio", "merger", "image", "vit.", "encoder.")
_STEER_KEY = re.compile(r"^(?P<prefix>(?:.+\.)?)layers\.(?P<layer>\d+)\.adapter\.steer$")
_LAYER_KEY = re.compile(r"^(?P<prefix>(?:.+\.)?)layers\.(?P<layer>\d+)\.")


# --------------------------------------------------------------------------- the steer file


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise SteerError(
            "steer adapters need torch: pip install 'taskmem_lab[hf]' (or the vllm extra)"
        ) from exc
    return torch


def check_matrix(matrix: Any, where: str = "steer") -> None:
    """`SteerError` unless `matrix` is a finite floating 2-D tensor."""
    torch = _torch()
    if not isinstance(matrix, torch.Tensor):
        raise SteerError(f"{where}: 'matrix' must be a torch tensor, got {type(matrix).__name__}")
    if matrix.dim() != 2 or matrix.shape[0] < 1 or matrix.shape[1] < 1:
        raise SteerError(
            f"{where}: 'matrix' must be [num_layers, hidden_size], got shape {tuple(matrix.shape)}"
        )
    if not matrix.is_floating_point():
        raise SteerError(f"{where}: 'matrix' must be floating point, got {matrix.dtype}")
    if not bool(torch.isfinite(matrix.detach()).all()):
        raise SteerError(f"{where}: 'matrix' holds NaN or infinite values")


def load_steer(path: str | Path) -> torch.Tensor:
    """The `[num_layers, hidden]` float32 matrix of a steer file (`{"matrix": tensor}`)."""
    torch = _torch()
    p = Path(path).expanduser()
    if not p.is_file():
        raise SteerError(f"steer file not found: {p}")
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise SteerError(
            f"steer file {p} is not a torch file of tensors ({type(exc).__name__}: {first}); "
            "expected {'matrix': Tensor[num_layers, hidden_size]} as `taskmem adapt` writes"
        ) from None
    if not isinstance(data, dict) or "matrix" not in data:
        raise SteerError(
            f"steer file {p} must hold a dict with a 'matrix' tensor "
            f"(found {type(data).__name__}{' keys ' + str(sorted(data)) if isinstance(data, dict) else ''})"
        )
    matrix = data["matrix"]
    check_matrix(matrix, f"steer file {p}")
    return matrix.detach().to(torch.float32).contiguous()


def save_steer(matrix: torch.Tensor, path: str | Path) -> Path:
    """Write `{"matrix": matrix}` (float32, on CPU) atomically (`store.atomic_file`)."""
    torch = _torch()
    check_matrix(matrix)
    p = Path(path).expanduser()
    with atomic_file(p, "wb") as fh:
        torch.save({"matrix": matrix.detach().cpu().float().contiguous()}, fh)
    return p


def nonzero_layers(matrix: torch.Tensor) -> tuple[int, ...]:
    """Indices of the rows that are not all zero."""
    rows = (matrix.detach() != 0).any(dim=1)
    return tuple(int(i) for i in rows.nonzero().flatten().tolist())


def parse_layers(text: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """`"22,23"` -> (22, 23); None stays None (every non-zero row)."""
    if text is None:
        return None
    if isinstance(text, str):
        items = [t.strip() for t in text.replace(" ", ",").split(",") if t.strip()]
        try:
            layers = tuple(int(t) for t in items)
        except ValueError:
            raise SteerError(
                f"steer layers {text!r} must be layer indices separated by commas, e.g. 22,23"
            ) from None
    else:
        layers = tuple(int(i) for i in text)
    if not layers:
        raise SteerError("steer layers: the list is empty (leave it out for every non-zero row)")
    if any(i < 0 for i in layers):
        raise SteerError(f"steer layers must be >= 0, got {list(layers)}")
    return tuple(sorted(set(layers)))


def resolve_layers(matrix: torch.Tensor, layers: Sequence[int] | None) -> tuple[int, ...]:
    """The layers a steer acts on: `layers` (checked against the matrix) or its non-zero rows."""
    if layers is None:
        return nonzero_layers(matrix)
    chosen = parse_layers(layers) or ()
    bad = [i for i in chosen if i >= matrix.shape[0]]
    if bad:
        raise SteerError(
            f"steer layers {bad} are out of range: the steer has {matrix.shape[0]} layers "
            f"(0..{matrix.shape[0] - 1})"
        )
    return chosen


def effective_steer(
    matrix: torch.Tensor, layers: Sequence[int] | None = None, scale: float = 1.0
) -> torch.Tensor:
    """What is added: `scale * matrix` on the chosen rows, zero elsewhere (float32, detached)."""
    torch = _torch()
    chosen = resolve_layers(matrix, layers)
    out = torch.zeros(tuple(matrix.shape), dtype=torch.float32)
    if chosen:
        index = torch.tensor(chosen, dtype=torch.long)
        out[index] = matrix.detach().cpu().float()[index] * float(scale)
    return out


def steer_identity(
    matrix: torch.Tensor | None, layers: Sequence[int] | None = None, scale: float = 1.0
) -> str:
    """A hash of the steer actually applied (shape and float32 bytes of `effective_steer`).

    Layers and scale enter through the effective matrix, so two settings that add the same
    vectors (a file scaled by `steer_scale`, or an exported checkpoint holding it pre-scaled) have
    one identity; a steer that adds nothing (none, all-zero, scale 0) is `""`, the unsteered one.
    """
    if matrix is None:
        return ""
    applied = effective_steer(matrix, layers, scale)
    if not bool((applied != 0).any()):
        return ""
    digest = hashlib.sha256(json.dumps(list(applied.shape)).encode())
    digest.update(applied.numpy().tobytes())
    return digest.hexdigest()[:32]


@dataclass(frozen=True)
class SteerSpec:
    """A steer as a model spec asks for it (`?steer=FILE&steer_layers=22,23&steer_scale=1.5`).

    Attributes:
        file: steer file; None means the checkpoint's own `adapter.steer` weights, if any.
        layers: decoder layers to steer; None means every non-zero row.
        scale: multiplies every applied vector (0 switches the steer off).
    """

    file: str | None = None
    layers: tuple[int, ...] | None = None
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.layers is not None:
            object.__setattr__(self, "layers", parse_layers(self.layers))
        if not isinstance(self.scale, int | float) or self.scale != self.scale:
            raise SteerError(f"SteerSpec field 'scale' must be a number, got {self.scale!r}")
        if self.file is not None and not str(self.file).strip():
            raise SteerError("SteerSpec field 'file' is empty; leave it out for no steer file")

    @property
    def is_default(self) -> bool:
        """No file, every non-zero row, scale 1: the checkpoint's own steer as it is (if any)."""
        return self.file is None and self.layers is None and self.scale == 1.0


@dataclass(frozen=True)
class SteerExportParams:
    """How `taskmem adapt-export` turns a steer file into a Phase-Two checkpoint.

    Attributes:
        layers: decoder layers written as `adapter.steer` weights (none given: every non-zero
            row of the steer).
        scale_layer: layers whose vector is multiplied by `scale` (none given: every written
            layer); the public release scales layer 22 by 1.5.
        scale: factor for the `scale_layer` vectors.
    """

    layers: tuple[int, ...] = ()
    scale_layer: tuple[int, ...] = ()
    scale: float = 1.0

    def __post_init__(self) -> None:
        for name in ("layers", "scale_layer"):
            value = tuple(getattr(self, name))
            if any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in value):
                raise SteerError(
                    f"SteerExportParams field {name!r} must be layer indices >= 0, got {value}"
                )
            object.__setattr__(self, name, tuple(sorted(set(value))))
        if not isinstance(self.scale, int | float) or not -1e6 < self.scale < 1e6:
            raise SteerError(f"SteerExportParams field 'scale' must be a number, got {self.scale}")

    def export(self, base_dir: str | Path, matrix: torch.Tensor, out_dir: str | Path) -> Path:
        """`export_checkpoint` with these settings."""
        return export_checkpoint(
            base_dir,
            matrix,
            out_dir,
            scale_layers=self.scale_layer or None,
            scale=self.scale,
            layers=self.layers or None,
        )


# --------------------------------------------------------------------------- the model side


def text_config(model_or_config: Any) -> Any:
    """The text (decoder) config of a model or config: `num_hidden_layers`, `hidden_size`."""
    config = getattr(model_or_config, "config", model_or_config)
    getter = getattr(config, "get_text_config", None)
    text = getter(decoder=True) if callable(getter) else getattr(config, "text_config", config)
    if (
        getattr(text, "num_hidden_layers", None) is None
        or getattr(text, "hidden_size", None) is None
    ):
        raise SteerError(
            f"{type(config).__name__} has no text config with num_hidden_layers and hidden_size"
        )
    return text


def _find(model: Any, path: str) -> Any:
    obj = model
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def decoder_layers_path(model: Any) -> str:
    """Dotted module path of the text decoder layers (e.g. `model.language_model.layers`)."""
    torch = _torch()
    count = int(text_config(model).num_hidden_layers)
    for path in LAYER_PATHS:
        found = _find(model, path)
        if isinstance(found, torch.nn.ModuleList) and len(found) == count:
            return path
    candidates = [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.ModuleList)
        and name.rsplit(".", 1)[-1] in ("layers", "h", "blocks")
        and len(module) == count
        and not any(word in name for word in _NOT_TEXT)
    ]
    if len(candidates) != 1:
        raise SteerError(
            f"cannot find the text decoder layers of {type(model).__name__} "
            f"({count} layers; candidates: {candidates or 'none'})"
        )
    return candidates[0]


def decoder_layers(model: Any) -> list[torch.nn.Module]:
    """The text decoder layers of a transformers VLM (Qwen2.5-VL, Qwen3-VL(-MoE), Idefics3,
    SmolVLM) or causal LM, in order."""
    return list(_find(model, decoder_layers_path(model)))


def check_fits(matrix: torch.Tensor, model: Any) -> None:
    """`SteerError` unless the steer's shape is the model's `[num_hidden_layers, hidden_size]`."""
    text = text_config(model)
    want = (int(text.num_hidden_layers), int(text.hidden_size))
    if tuple(matrix.shape) != want:
        raise SteerError(
            f"steer shape {tuple(matrix.shape)} does not fit {type(model).__name__}: it has "
            f"{want[0]} decoder layers of hidden size {want[1]}"
        )


def _add(output: Any, delta: torch.Tensor) -> Any:
    """`output` with `delta` added to its hidden states (a tensor, or a tuple's first item)."""
    torch = _torch()
    if isinstance(output, torch.Tensor):
        return output + delta.to(dtype=output.dtype, device=output.device)
    if isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
        hidden = output[0] + delta.to(dtype=output[0].dtype, device=output[0].device)
        return type(output)((hidden, *output[1:]))
    raise SteerError(
        f"a decoder layer returned {type(output).__name__}; steer hooks expect hidden states "
        "as a tensor or the first item of a tuple"
    )


class SteerHandle:
    """The hooks of one attached steer; `remove()` (or leaving a `with` block) takes them off.

    `enabled` switches the steer without removing hooks; `disabled()` does so for a block (a
    DPO reference pass on the same weights).
    """

    def __init__(self, matrix: torch.Tensor, layers: tuple[int, ...], scale: float) -> None:
        self.matrix = matrix
        self.layers = layers
        self.scale = scale
        self.enabled = True
        self._hooks: list[Any] = []

    def _hook(self, index: int) -> Any:
        def hook(_module: Any, _args: Any, output: Any) -> Any:
            if not self.enabled:
                return output
            return _add(output, self.scale * self.matrix[index])

        return hook

    @contextlib.contextmanager
    def disabled(self) -> Iterator[SteerHandle]:
        """Run a block with the steer off (restores the previous state after)."""
        before = self.enabled
        self.enabled = False
        try:
            yield self
        finally:
            self.enabled = before

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    def __enter__(self) -> SteerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def attach_steer(
    model: Any,
    matrix: torch.Tensor,
    layers: Sequence[int] | None = None,
    scale: float = 1.0,
) -> SteerHandle:
    """Hook `scale * matrix[i]` onto the output of each chosen decoder layer `i`.

    The hooks read `matrix` at every forward pass (no copy), so a trainable `nn.Parameter` gets
    gradients and in-place updates take effect at once. `layers=None` steers every non-zero row
    of `matrix` as it is now (pass `layers` explicitly for a steer that starts at zero).
    """
    check_matrix(matrix)
    check_fits(matrix, model)
    chosen = resolve_layers(matrix, layers)
    handle = SteerHandle(matrix, chosen, float(scale))
    modules = decoder_layers(model)
    for i in chosen:
        handle._hooks.append(modules[i].register_forward_hook(handle._hook(i)))
    return handle


# --------------------------------------------------------------------------- checkpoints


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SteerError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise SteerError(f"{path} must hold a JSON object")
    return data


def text_config_dict(config: dict[str, Any]) -> dict[str, Any]:
    """The text part of a `config.json` (its `text_config`, or the top level for flat configs)."""
    sub = config.get("text_config")
    if isinstance(sub, dict) and "num_hidden_layers" in sub:
        return sub
    return config


def adapter_layers(config: dict[str, Any]) -> str | list[int] | None:
    """The `adapter_layers` of a `config.json` (text config first, then the top level)."""
    value = text_config_dict(config).get(ADAPTER_LAYERS, config.get(ADAPTER_LAYERS))
    if value is None or value in ("all", "none"):
        return value
    if isinstance(value, list) and all(isinstance(i, int) and i >= 0 for i in value):
        return [int(i) for i in value]
    raise SteerError(f"config {ADAPTER_LAYERS} must be 'all', 'none' or a list of layer indices")


def weight_files(ckpt_dir: str | Path) -> dict[str, str]:
    """Weight name -> safetensors file of a checkpoint folder (index, or the single file)."""
    from safetensors import safe_open

    d = Path(ckpt_dir)
    if (d / INDEX_NAME).is_file():
        weight_map = _read_json(d / INDEX_NAME).get("weight_map")
        if not isinstance(weight_map, dict):
            raise SteerError(f"{d / INDEX_NAME} has no weight_map")
        return {str(k): str(v) for k, v in weight_map.items()}
    if (d / SINGLE_NAME).is_file():
        with safe_open(str(d / SINGLE_NAME), framework="pt") as fh:
            return dict.fromkeys(fh.keys(), SINGLE_NAME)
    raise SteerError(
        f"checkpoint {d} has no {SINGLE_NAME} or {INDEX_NAME} (steer adapters need safetensors)"
    )


def steer_layer(name: str) -> int | None:
    """The layer index of a `...layers.<i>.adapter.steer` weight name; None for any other."""
    m = _STEER_KEY.match(name)
    return int(m["layer"]) if m else None


def steer_key(prefix: str, layer: int) -> str:
    """`<prefix>layers.<layer>.adapter.steer` (prefix like `model.language_model.`)."""
    return f"{prefix}layers.{layer}.{STEER_SUFFIX}"


def read_checkpoint_steer(ckpt_dir: str | Path) -> torch.Tensor | None:
    """The checkpoint's own steer as `[num_layers, hidden]` float32, or None when it has none.

    Reads `config.json` and the `*.adapter.steer` tensors only (safetensors headers and those
    tensors), never the model. Layers listed in `adapter_layers` without a stored vector are
    zero, as a freshly built adapter is; `adapter_layers: "none"` means no steer.
    """
    from safetensors import safe_open

    torch = _torch()
    d = Path(ckpt_dir)
    config = _read_json(d / "config.json")
    declared = adapter_layers(config)
    if declared == "none":
        return None
    files = weight_files(d)
    keys = {k: i for k in files if (i := steer_layer(k)) is not None}
    if declared is None and not keys:
        return None
    text = text_config_dict(config)
    num_layers, hidden = int(text["num_hidden_layers"]), int(text["hidden_size"])
    allowed = set(range(num_layers)) if declared in (None, "all") else set(declared)
    if any(i >= num_layers for i in allowed):
        raise SteerError(f"{d}: {ADAPTER_LAYERS} {declared} beyond its {num_layers} layers")
    matrix = torch.zeros(num_layers, hidden, dtype=torch.float32)
    for key, layer in sorted(keys.items(), key=lambda kv: kv[1]):
        if layer not in allowed:
            log.warning("%s: %s is outside %s=%s; ignored", d, key, ADAPTER_LAYERS, declared)
            continue
        with safe_open(str(d / files[key]), framework="pt") as fh:
            vector = fh.get_tensor(key).float().flatten()
        if vector.numel() != hidden:
            raise SteerError(f"{d}: {key} has {vector.numel()} values, hidden size is {hidden}")
        matrix[layer] = vector
    missing = sorted(allowed - set(keys.values())) if declared not in (None, "all") else []
    if missing:
        log.warning("%s: adapter layers %s have no stored steer; they add zero", d, missing)
    check_matrix(matrix, f"checkpoint {d}")
    return matrix


def layer_prefix(names: Sequence[str] | dict[str, str], num_layers: int) -> str:
    """The prefix of the text decoder layers in a checkpoint's weight names.

    `model.language_model.` for Qwen3-VL, `model.text_model.` for Idefics3; vision towers are
    skipped, and the prefix must name exactly `num_layers` layers.
    """
    seen: dict[str, set[int]] = {}
    for name in names:
        m = _LAYER_KEY.match(name)
        if m and not any(word in m["prefix"] for word in _NOT_TEXT):
            seen.setdefault(m["prefix"], set()).add(int(m["layer"]))
    fits = sorted(p for p, layers in seen.items() if layers == set(range(num_layers)))
    if "model.language_model." in fits:
        return "model.language_model."
    if len(fits) != 1:
        raise SteerError(
            f"cannot tell the text decoder layers' weight names ({num_layers} layers; "
            f"prefixes seen: {sorted(seen) or 'none'})"
        )
    return fits[0]


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _base_dtype(config: dict[str, Any]) -> str:
    text = text_config_dict(config)
    name = text.get("dtype") or text.get("torch_dtype") or config.get("dtype")
    name = name or config.get("torch_dtype") or "float32"
    return str(name) if name in ("float32", "float16", "bfloat16") else "float32"


def export_checkpoint(
    base_dir: str | Path,
    matrix: torch.Tensor,
    out_dir: str | Path,
    scale_layers: Sequence[int] | None = None,
    scale: float = 1.0,
    layers: Sequence[int] | None = None,
) -> Path:
    """Write a Phase-Two checkpoint: `base_dir` plus the steer as `adapter.steer` weights.

    The steer's `layers` (default: its non-zero rows) are written, in the base weights' dtype,
    after multiplying `scale_layers` (default: all of them) by `scale`, as the public release
    multiplies layer 22 by 1.5. Base files are hard-linked (copied across file systems); the
    index lists the base weights plus one `<prefix>layers.<i>.adapter.steer` per layer, and the
    text config gets `adapter_layers`. transformers loads the folder as the base (extra weights
    are ignored); the `hf` backend and the vLLM plugin apply the steer.
    """
    from safetensors.torch import save_file

    torch = _torch()
    base, out = Path(base_dir).expanduser().resolve(), Path(out_dir).expanduser().resolve()
    if not (base / "config.json").is_file():
        raise SteerError(f"base checkpoint {base} has no config.json")
    if out == base:
        raise SteerError("the exported checkpoint must go to another folder than its base")
    if out.exists() and any(out.iterdir()):
        raise SteerError(f"output folder {out} is not empty; pick a new one or empty it")
    check_matrix(matrix)
    config = _read_json(base / "config.json")
    if adapter_layers(config) not in (None, "none"):
        raise SteerError(
            f"{base} is already a Phase-Two checkpoint ({ADAPTER_LAYERS} set); export from its base"
        )
    text = text_config_dict(config)
    want = (int(text["num_hidden_layers"]), int(text["hidden_size"]))
    if tuple(matrix.shape) != want:
        raise SteerError(
            f"steer shape {tuple(matrix.shape)} does not fit {base}: it has {want[0]} decoder "
            f"layers of hidden size {want[1]}"
        )
    chosen = resolve_layers(matrix, layers)
    if not chosen:
        raise SteerError("the steer is all zero: there is nothing to export")
    scaled = resolve_layers(matrix, scale_layers) if scale_layers is not None else chosen
    applied = matrix.detach().cpu().float().clone()
    for i in scaled:
        applied[i] = applied[i] * float(scale)
    files = weight_files(base)
    prefix = layer_prefix(files, want[0])
    dtype = getattr(torch, _base_dtype(config))
    tensors = {steer_key(prefix, i): applied[i].to(dtype).contiguous() for i in chosen}

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        for src in base.iterdir():
            if src.is_file() and src.name not in ("config.json", INDEX_NAME, SINGLE_NAME):
                _link_or_copy(src, staging / src.name)
        if (base / SINGLE_NAME).is_file() and not (base / INDEX_NAME).is_file():
            _link_or_copy(base / SINGLE_NAME, staging / BASE_SHARD)
            files = {k: BASE_SHARD for k in files}
        save_file(tensors, str(staging / STEER_SHARD), metadata={"format": "pt"})
        index = _read_json(base / INDEX_NAME) if (base / INDEX_NAME).is_file() else {}
        size = sum((staging / f).stat().st_size for f in set(files.values()))
        index_meta = dict(index.get("metadata") or {})
        index_meta["total_size"] = int(index_meta.get("total_size") or size) + sum(
            t.numel() * t.element_size() for t in tensors.values()
        )
        weight_map = {**files, **dict.fromkeys(tensors, STEER_SHARD)}
        atomic_write_json(staging / INDEX_NAME, {"metadata": index_meta, "weight_map": weight_map})
        every = chosen == tuple(range(want[0]))
        text[ADAPTER_LAYERS] = "all" if every else list(chosen)
        atomic_write_json(staging / "config.json", config)
        out.mkdir(exist_ok=True)
        for item in staging.iterdir():
            os.replace(item, out / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("exported a Phase-Two checkpoint to %s (steered layers %s)", out, list(chosen))
    return out

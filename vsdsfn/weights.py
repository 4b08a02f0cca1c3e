"""Weights files: safetensors with the architecture config in the metadata.

Loading never unpickles: a file that is not a safetensors file (a PyTorch pickle, a
truncated download, ...) is refused with an error naming the file and the problem.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

import torch
from safetensors import SafetensorError as SafetensorsError
from safetensors.torch import load_file, save_file

from .nets import DSFN, DSFNConfig

__all__ = ["WeightsError", "NAMED_WEIGHTS", "default_weights_path", "resolve_weights", "load_model",
           "save_model", "read_config", "ABSENT_FIELDS"]

#: the weights format this version reads and writes
FORMAT = "vsdsfn-2"
DEFAULT_NAME = "dsfn_default.safetensors"
#: The shipped weights files, by the names ``upscale(weights=...)`` accepts (model cards
#: beside them in models/).
NAMED_WEIGHTS = {"default": DEFAULT_NAME}
#: tensors stored in half precision (M_T, the pretrained interpolator: half the file size;
#: they are loaded as float32, and the output changes by less than the model card states)
HALF_PREFIXES = ("temporal.",)


class WeightsError(ValueError):
    """A weights file is missing, unreadable or does not match its architecture."""


def _shipped(filename: str) -> Path:
    """A file shipped in models/ (installed as the package data ``vsdsfn.models``)."""
    try:
        path = Path(str(resources.files("vsdsfn.models").joinpath(filename)))
        if path.is_file():
            return path
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parent.parent / "models" / filename


def default_weights_path() -> Path:
    """Path of the shipped default weights (installed package data or the repo's models/)."""
    return _shipped(DEFAULT_NAME)


def resolve_weights(weights: str | os.PathLike | None) -> Path:
    """The file that ``weights`` names: ``None`` or ``"default"`` the shipped default
    (:data:`NAMED_WEIGHTS`), anything else a path (write ``./default`` for a file of
    that name).

    >>> resolve_weights("default").name
    'dsfn_default.safetensors'
    >>> resolve_weights("runs/my.safetensors") == Path("runs/my.safetensors")
    True
    """
    if weights is None:
        return default_weights_path()
    if not os.fspath(weights).strip():
        raise WeightsError("the weights path is empty")
    if isinstance(weights, str) and weights in NAMED_WEIGHTS:
        return _shipped(NAMED_WEIGHTS[weights])
    path = Path(weights)
    if isinstance(weights, str) and not path.exists() and not path.suffix and len(path.parts) == 1:
        raise WeightsError(f"weights {weights!r} is neither a shipped model "
                           f"({', '.join(map(repr, NAMED_WEIGHTS))}) nor an existing file")
    return path


def save_model(model: DSFN, path: str | os.PathLike, extra: dict[str, str] | None = None) -> Path:
    """Write ``model`` to ``path`` (safetensors, atomically) with its config as metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "config": json.dumps(model.config.to_dict())}
    meta.update(extra or {})
    tensors = {k: v.detach().to("cpu", torch.float16 if k.startswith(HALF_PREFIXES) else torch.float32).contiguous()
               for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.chmod(tmp, 0o644)  # readable by everyone, like any installed package data
    os.replace(tmp, path)
    return path


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    """A safetensors file starts with its JSON header's length (u64, little-endian), then
    ``{``. (Checked first: a header length such as 0x10280 starts with the same two bytes
    as a protocol-2 pickle.)"""
    return len(head) >= 9 and head[8:9] == b"{" and 8 < 8 + int.from_bytes(head[:8], "little") <= size


def _looks_like_pickle(head: bytes) -> bool:
    """A pickle of protocol 2-5 (``\\x80`` + protocol) or a zip (``torch.save``'s format)."""
    return (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5) or head[:4] == b"PK\x03\x04"


def _open(path: Path):
    if not path.exists():
        raise WeightsError(f"weights file {str(path)!r} does not exist")
    if path.is_dir():
        raise WeightsError(f"weights {str(path)!r} is a folder; give the path of a .safetensors file")
    if not path.is_file():
        raise WeightsError(f"weights file {str(path)!r} is not a file")
    with open(path, "rb") as f:
        head = f.read(16)
    if not _looks_like_safetensors(head, path.stat().st_size) and _looks_like_pickle(head):
        raise WeightsError(
            f"weights file {str(path)!r} is a pickle/PyTorch checkpoint; vsdsfn only loads "
            "safetensors (pickles can run code). Convert a training checkpoint with "
            "`python -m training.export CHECKPOINT OUT.safetensors`"
        )
    try:
        from safetensors import safe_open

        return safe_open(str(path), framework="pt")
    except (SafetensorsError, OSError, ValueError) as exc:
        raise WeightsError(f"weights file {str(path)!r} is not a valid safetensors file ({exc}); "
                           "it may be truncated or corrupt: download or export it again") from None


#: Architecture fields a stored config may lack, with the value such a file was trained
#: with (the network before the field existed), not today's default
ABSENT_FIELDS: dict[str, object] = {"ts_reverse": False, "time_input": False, "refine_padding": "zeros",
                                     "spatial_padding": "zeros"}


def read_config(path: str | os.PathLike) -> tuple[DSFNConfig, dict[str, str]]:
    """The architecture config and all metadata stored in a weights file (or a shipped
    model's name, see :func:`resolve_weights`)."""
    path = resolve_weights(path)
    meta = _open(path).metadata() or {}
    if meta.get("format") == "vsdsfn-1":
        raise WeightsError(f"weights file {str(path)!r} is for vsdsfn 0.1 (format 'vsdsfn-1', another M_T); "
                           "this version reads 'vsdsfn-2' files: use the shipped weights or retrain with training/")
    if meta.get("format") != FORMAT or "config" not in meta:
        raise WeightsError(f"weights file {str(path)!r} has no vsdsfn architecture metadata "
                           f"(format {meta.get('format')!r}); export it with training.export")
    try:
        config = DSFNConfig.from_dict({**ABSENT_FIELDS, **json.loads(meta["config"])})
    except (ValueError, TypeError) as exc:
        raise WeightsError(f"weights file {str(path)!r}: bad architecture config: {exc}") from None
    return config, meta


def load_model(path: str | os.PathLike | None = None) -> DSFN:
    """Build the network a weights file describes and load its tensors (eval mode, CPU).

    ``path``: a .safetensors file, or a shipped model's name or ``None`` (see
    :func:`resolve_weights`)."""
    path = resolve_weights(path)
    config, _ = read_config(path)
    try:
        model = DSFN(config)
    except (ValueError, TypeError) as exc:
        raise WeightsError(f"weights file {str(path)!r}: cannot build its network: {exc}") from None
    try:
        state = load_file(str(path))
    except (SafetensorsError, OSError, ValueError) as exc:
        raise WeightsError(f"weights file {str(path)!r} cannot be read ({exc}); it may be truncated") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in expected if k in state and state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} tensors of the wrong shape (e.g. {k}: file "
                         f"{tuple(state[k].shape)}, network {tuple(expected[k].shape)})")
        raise WeightsError(f"weights file {str(path)!r} does not match its architecture: " + "; ".join(parts))
    broken = next((k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if broken is not None:
        raise WeightsError(f"weights file {str(path)!r}: tensor {broken!r} holds NaN or infinite values; the file is "
                           "broken: export or download it again")
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval()

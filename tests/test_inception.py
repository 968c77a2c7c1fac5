"""Tests for agan_jax.inception: weight loaders (.npz, .pth zip and legacy), the stem."""

from __future__ import annotations

import collections
import pickle
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from agan_jax import inception
from agan_jax.errors import UserError

EXTRA = {
    "Mixed_5b.branch1x1.conv.weight": (64, 192, 1, 1),
    "fc.weight": (10, 2048),
    "fc.bias": (10,),
}


def random_state_dict(seed: int = 0) -> dict[str, np.ndarray]:
    """Torchvision-named Inception tensors with random values, plus extra keys."""
    rng = np.random.default_rng(seed)
    sd: dict[str, np.ndarray] = {}
    for key, shape in inception.expected_shapes().items():
        if key.endswith("conv.weight"):
            fan_in = shape[1] * shape[2] * shape[3]
            v = rng.normal(0.0, (2.0 / fan_in) ** 0.5, shape)
        elif key.endswith("running_var"):
            v = rng.uniform(0.5, 1.5, shape)
        elif key.endswith("bn.weight"):
            v = rng.uniform(0.8, 1.2, shape)
        else:
            v = rng.normal(0.0, 0.1, shape)
        sd[key] = v.astype(np.float32)
        if key.endswith("running_var"):
            sd[key.replace("running_var", "num_batches_tracked")] = np.array(
                7, np.int64
            )
    for key, shape in EXTRA.items():
        sd[key] = rng.normal(size=shape).astype(np.float32)
    return sd


def check_variables(variables: dict, sd: dict[str, np.ndarray]) -> None:
    """Every expected tensor is mapped, values exactly equal (kernels OIHW -> HWIO)."""
    n = 0
    for key in inception.expected_shapes():
        block, module, field = key.split(".")
        if module == "conv":
            got = variables["params"][block]["conv"]["kernel"]
            want = sd[key].transpose(2, 3, 1, 0)
        else:
            coll, name = {
                "weight": ("params", "scale"),
                "bias": ("params", "bias"),
                "running_mean": ("batch_stats", "mean"),
                "running_var": ("batch_stats", "var"),
            }[field]
            got = variables[coll][block]["bn"][name]
            want = sd[key]
        np.testing.assert_array_equal(np.asarray(got), want)
        n += 1
    assert n == 25


# ---------------------------------------------------------------- fake torch pickles


class _Storage:
    def __init__(self, key: str, kind: type, data: np.ndarray):
        self.key, self.kind, self.data = key, kind, np.ascontiguousarray(data).ravel()


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self.args = (storage, offset, size, stride)

    def __reduce_ex__(self, protocol):
        return (_fake_rebuild, (*self.args, False, collections.OrderedDict()))


def _fake_rebuild(*args):  # pickled by reference as torch._utils._rebuild_tensor_v2
    raise AssertionError("never called")


_fake_rebuild.__module__ = "torch._utils"
_fake_rebuild.__qualname__ = _fake_rebuild.__name__ = "_rebuild_tensor_v2"


def _storage_class(name: str) -> type:
    cls = type(name, (), {})
    cls.__module__ = "torch"
    return cls


_KINDS = {
    np.dtype("float32"): _storage_class("FloatStorage"),
    np.dtype("float16"): _storage_class("HalfStorage"),
    np.dtype("int64"): _storage_class("LongStorage"),
}


class _Pickler(pickle.Pickler):
    legacy = False

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            pid = ("storage", obj.kind, obj.key, "cpu", obj.data.size)
            return (*pid, None) if self.legacy else pid
        return None


def _fake_torch_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    utils._rebuild_tensor_v2 = _fake_rebuild
    torch._utils = utils
    for cls in _KINDS.values():
        setattr(torch, cls.__name__, cls)
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)


def _torch_like(sd: dict[str, np.ndarray]) -> tuple[collections.OrderedDict, list]:
    """Tensors over storages the way torch lays them out, with shared/strided ones."""
    storages: list[_Storage] = []
    out: collections.OrderedDict = collections.OrderedDict()
    keys = list(sd)
    # Two tensors share one storage (the second at an offset).
    a, b = sd[keys[0]], sd[keys[1]]
    if a.dtype == b.dtype:
        st = _Storage(
            str(len(storages)), _KINDS[a.dtype], np.concatenate([a.ravel(), b.ravel()])
        )
        storages.append(st)
        strides = lambda x: tuple(int(s) // x.itemsize for s in x.strides)  # noqa: E731
        out[keys[0]] = _Tensor(st, 0, a.shape, strides(a))
        out[keys[1]] = _Tensor(st, a.size, b.shape, strides(b))
        keys = keys[2:]
    for key in keys:
        v = sd[key]
        st_data = v
        size, stride = v.shape, tuple(int(s) // max(v.itemsize, 1) for s in v.strides)
        if v.ndim == 4:  # store transposed (channels-last memory), non-contiguous view
            st_data = np.ascontiguousarray(v.transpose(0, 2, 3, 1))
            o, i, h, w = v.shape
            stride = (h * w * i, 1, w * i, i)
        st = _Storage(str(len(storages)), _KINDS[v.dtype], st_data)
        storages.append(st)
        out[key] = _Tensor(st, 0, size, stride)
    out._metadata = collections.OrderedDict({"": {"version": 1}})
    return out, storages


def write_fake_pth(path: Path, sd: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """A torch.save-style zip: archive/data.pkl (protocol 2), archive/data/<key>..."""
    obj, storages = _torch_like(sd)
    with monkeypatch.context() as m:
        _fake_torch_modules(m)
        import io

        buf = io.BytesIO()
        _Pickler(buf, protocol=2).dump(obj)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", buf.getvalue())
        zf.writestr("archive/byteorder", "little")
        for st in storages:
            zf.writestr(
                f"archive/data/{st.key}",
                st.data.astype(st.data.dtype.newbyteorder("<")).tobytes(),
            )
        zf.writestr("archive/version", "3\n")
        zf.writestr("archive/.data/serialization_id", "0123456789")


def write_fake_legacy(path: Path, sd: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pre-1.6 torch.save stream: magic, version, sys info, data, keys, storages."""
    obj, storages = _torch_like(sd)
    with open(path, "wb") as f, monkeypatch.context() as m:
        _fake_torch_modules(m)
        pickle.dump(0x1950A86A20F9469CFC6C, f, protocol=2)
        pickle.dump(1001, f, protocol=2)
        pickle.dump({"protocol_version": 1001, "little_endian": True}, f, protocol=2)
        p = _Pickler(f, protocol=2)
        p.legacy = True
        p.dump(obj)
        keys = sorted(st.key for st in storages)
        pickle.dump(keys, f, protocol=2)
        by_key = {st.key: st for st in storages}
        for k in keys:
            data = by_key[k].data
            f.write(int(data.size).to_bytes(8, "little", signed=True))
            f.write(data.astype(data.dtype.newbyteorder("<")).tobytes())


# -------------------------------------------------------------------------- loaders


def test_expected_shapes_cover_stem():
    shapes = inception.expected_shapes()
    assert len(shapes) == 25
    assert shapes["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
    assert shapes["Conv2d_4a_3x3.conv.weight"] == (192, 80, 3, 3)
    assert shapes["Conv2d_3b_1x1.bn.running_var"] == (80,)


def test_npz_loader_maps_every_tensor(tmp_path):
    sd = random_state_dict()
    path = inception.save_npz_from_state_dict(sd, tmp_path / "w")
    assert path.name == "w.npz" and path.is_file()
    check_variables(inception.load_inception_weights(path), sd)


def test_pth_zip_loader_maps_every_tensor(tmp_path, monkeypatch):
    sd = random_state_dict(1)
    sd["fc.half"] = np.arange(6, dtype=np.float16).reshape(2, 3)
    path = tmp_path / "inception_v3.pth"
    write_fake_pth(path, sd, monkeypatch)
    assert "torch" not in sys.modules or hasattr(sys.modules["torch"], "__file__")
    raw = inception.read_torch_state_dict(path)
    assert set(raw) == set(sd)
    for k, v in sd.items():
        assert raw[k].dtype == v.dtype, k
        np.testing.assert_array_equal(raw[k], v)
    check_variables(inception.load_inception_weights(path), sd)


def test_pth_legacy_loader_maps_every_tensor(tmp_path, monkeypatch):
    sd = random_state_dict(2)
    path = tmp_path / "legacy.pth"
    write_fake_legacy(path, sd, monkeypatch)
    raw = inception.read_torch_state_dict(path)
    assert set(raw) == set(sd)
    for k, v in sd.items():
        np.testing.assert_array_equal(raw[k], v)
    check_variables(inception.load_inception_weights(path), sd)


def test_pth_refuses_foreign_globals(tmp_path):
    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"x": Evil()}, protocol=2))
    with pytest.raises(UserError, match="not allowed"):
        inception.load_inception_weights(path)
    assert not (tmp_path / "pwned").exists()


def test_missing_key_names_key_and_shape(tmp_path):
    sd = random_state_dict()
    del sd["Conv2d_2b_3x3.bn.running_mean"]
    path = inception.save_npz_from_state_dict(sd, tmp_path / "w.npz")
    with pytest.raises(
        UserError,
        match=r"missing Conv2d_2b_3x3\.bn\.running_mean \(expected shape \(64,\)\)",
    ):
        inception.load_inception_weights(path)


def test_wrong_shape_names_key_and_shape(tmp_path, monkeypatch):
    sd = random_state_dict()
    sd["Conv2d_4a_3x3.conv.weight"] = np.zeros((192, 80, 1, 1), np.float32)
    path = tmp_path / "w.pth"
    write_fake_pth(path, sd, monkeypatch)
    with pytest.raises(
        UserError,
        match=r"Conv2d_4a_3x3\.conv\.weight has shape \(192, 80, 1, 1\), expected \(192, 80, 3, 3\)",
    ):
        inception.load_inception_weights(path)


def test_missing_or_garbage_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        inception.load_inception_weights(tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(UserError, match="cannot read"):
        inception.load_inception_weights(junk)


# ---------------------------------------------------------------------------- stem


def _np_conv(x: np.ndarray, w: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """torch.nn.functional.conv2d semantics: NCHW x OIHW, cross-correlation."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    o, i, k, _ = w.shape
    h = (x.shape[2] - k) // stride + 1
    wd = (x.shape[3] - k) // stride + 1
    out = np.zeros((x.shape[0], o, h, wd))
    for dy in range(k):
        for dx in range(k):
            patch = x[
                :, :, dy : dy + stride * h : stride, dx : dx + stride * wd : stride
            ]
            out += np.einsum("nihw,oi->nohw", patch, w[:, :, dy, dx])
    return out


def _np_stem(x_nchw: np.ndarray, sd: dict, layer: int) -> np.ndarray:
    def block(x, name, stride, pad):
        y = _np_conv(x, sd[f"{name}.conv.weight"].astype(np.float64), stride, pad)
        m, v = sd[f"{name}.bn.running_mean"], sd[f"{name}.bn.running_var"]
        g, b = sd[f"{name}.bn.weight"], sd[f"{name}.bn.bias"]
        y = (y - m[:, None, None]) / np.sqrt(v[:, None, None] + 1e-3) * g[
            :, None, None
        ] + b[:, None, None]
        return np.maximum(y, 0.0)

    x = block(x_nchw, "Conv2d_1a_3x3", 2, 0)
    x = block(x, "Conv2d_2a_3x3", 1, 0)
    x = block(x, "Conv2d_2b_3x3", 1, 1)
    if layer == 64:
        return x
    n, c, h, w = x.shape
    ho, wo = (h - 3) // 2 + 1, (w - 3) // 2 + 1
    pooled = np.full((n, c, ho, wo), -np.inf)
    for dy in range(3):
        for dx in range(3):
            pooled = np.maximum(
                pooled, x[:, :, dy : dy + 2 * ho : 2, dx : dx + 2 * wo : 2]
            )
    x = block(pooled, "Conv2d_3b_1x1", 1, 0)
    return block(x, "Conv2d_4a_3x3", 1, 0)


@pytest.mark.parametrize("layer", [64, 192])
def test_stem_matches_torch_semantics_reference(layer):
    sd = random_state_dict(3)
    variables = inception.variables_from_state_dict(sd)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, 23, 27, 3)).astype(np.float32)
    got = np.asarray(inception.features(variables, x, layer))
    want = _np_stem(x.transpose(0, 3, 1, 2).astype(np.float64), sd, layer).transpose(
        0, 2, 3, 1
    )
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_feature_shapes_64x64():
    variables = inception.variables_from_state_dict(random_state_dict())
    x = np.zeros((64, 64, 3), np.float32)
    assert inception.features(variables, x, 64).shape == (29, 29, 64)
    assert inception.features(variables, x, 192).shape == (12, 12, 192)
    assert inception.features(variables, x[None].repeat(2, 0), 192).shape == (
        2,
        12,
        12,
        192,
    )


def test_features_bad_input():
    variables = inception.variables_from_state_dict(random_state_dict())
    with pytest.raises(UserError, match="layer must be one of"):
        inception.features(variables, np.zeros((32, 32, 3), np.float32), 128)
    with pytest.raises(UserError, match="too small"):
        inception.features(variables, np.zeros((15, 40, 3), np.float32), 192)
    with pytest.raises(UserError, match="RGB"):
        inception.features(variables, np.zeros((32, 32, 1), np.float32), 64)

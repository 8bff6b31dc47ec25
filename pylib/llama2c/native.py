"""The native backend: the gcc-built engine (wasm/run.c) loaded with ctypes.

The checkpoint is memory-mapped and handed to the engine in place; logits come back as a numpy
view of the engine's own buffer, with no copy.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
import threading
from pathlib import Path

import numpy as np

from . import sampler
from .checkpoint import Config
from .errors import CheckpointError, EngineError
from .toolchain import LIB_NAME

ENGINE_ENV = "LLAMA2C_ENGINE"  # path of an engine library to use instead of the packaged one
THREADS_ENV = "LLAMA2C_THREADS"  # threads to compute with; unset or 0 = automatic

# l2c_* error codes (wasm/run.c section 1) that mean the checkpoint itself is bad
_CHECKPOINT_CODES = {2, 3, 4}

_lib: ctypes.CDLL | None = None


def library_path() -> Path:
    override = os.environ.get(ENGINE_ENV)
    return Path(override) if override else Path(__file__).with_name(LIB_NAME)


def load_library() -> ctypes.CDLL:
    """Loads the engine library once and declares its C signatures."""
    global _lib
    if _lib is not None:
        return _lib
    path = library_path()
    if not path.exists():
        raise EngineError(f"the native engine {path} is not built: run `invoke native` "
                          "or `pip install .`")
    lib = ctypes.CDLL(str(path))
    ptr, size, ints = ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_int)
    lib.l2c_last_error.restype = ctypes.c_char_p
    lib.l2c_last_error.argtypes = []
    lib.l2c_last_error_code.restype = ctypes.c_int
    lib.l2c_check.restype = ctypes.c_int
    lib.l2c_check.argtypes = [ptr, size, ints]
    lib.l2c_load.restype = ptr
    lib.l2c_load.argtypes = [ptr, size]
    lib.l2c_config.restype = ctypes.c_int
    lib.l2c_config.argtypes = [ptr, ints]
    lib.l2c_shared_classifier.restype = ctypes.c_int
    lib.l2c_shared_classifier.argtypes = [ptr]
    lib.l2c_forward.restype = ctypes.POINTER(ctypes.c_float)
    lib.l2c_forward.argtypes = [ptr, ctypes.c_int, ctypes.c_int]
    lib.l2c_format.restype = ctypes.c_int
    lib.l2c_format.argtypes = [ptr]
    lib.l2c_group_size.restype = ctypes.c_int
    lib.l2c_group_size.argtypes = [ptr]
    lib.l2c_set_threads.restype = ctypes.c_int
    lib.l2c_set_threads.argtypes = [ptr, ctypes.c_int]
    lib.l2c_expf.restype = None
    lib.l2c_expf.argtypes = [ptr, ptr, ctypes.c_int]
    lib.l2c_nucleus_work_size.restype = size
    lib.l2c_nucleus_work_size.argtypes = [ctypes.c_int]
    lib.l2c_nucleus.restype = ctypes.c_int
    lib.l2c_nucleus.argtypes = [ptr, ctypes.c_int, ctypes.c_float, ctypes.c_float, ctypes.c_float,
                                ctypes.c_float, ptr, ptr, ptr]
    lib.l2c_argmax.restype = ctypes.c_int
    lib.l2c_argmax.argtypes = [ptr, ctypes.c_int]
    lib.l2c_choose.restype = ctypes.c_int
    lib.l2c_choose.argtypes = [ptr, ptr, ctypes.c_int, ctypes.c_float]
    lib.l2c_free.restype = None
    lib.l2c_free.argtypes = [ptr]
    lib.l2c_q8_matmul.restype = ctypes.c_int
    lib.l2c_q8_matmul.argtypes = [ptr] * 5 + [ctypes.c_int] * 3
    lib.l2c_rope_table.restype = ctypes.c_int
    lib.l2c_rope_table.argtypes = [ptr, ctypes.c_int, ctypes.c_int]
    lib.l2c_int8_kernel.restype = ctypes.c_char_p
    lib.l2c_int8_kernel.argtypes = []
    _lib = lib
    return lib


def expf(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out = the C library's expf(x), elementwise (contiguous float32 arrays, same length).

    This is the expf run.c's softmax calls; the sampler uses it for bit-exact probabilities.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if out.dtype != np.float32 or not out.flags.c_contiguous or len(out) != len(x):
        raise ValueError("expf needs a contiguous float32 output of the input's length")
    load_library().l2c_expf(x.ctypes.data, out.ctypes.data, len(x))
    return out


class Nucleus:
    """The engine's top-p list (l2c_nucleus), with its buffers kept for the next call."""

    def __init__(self) -> None:
        self._size = 0

    def __call__(self, logits: np.ndarray, temperature: float, topp: float
                 ) -> tuple[np.ndarray, np.ndarray] | None:
        """sampler.nucleus's (ids, cdf) for softmax(logits / temperature), or None where the engine
        leaves it to numpy. The arrays are overwritten by the next call."""
        lib = load_library()
        n = len(logits)
        logits = np.ascontiguousarray(logits, dtype=np.float32)
        if n != self._size:
            self._ids, self._cdf = np.empty(n, np.int32), np.empty(n, np.float32)
            self._work = np.empty(lib.l2c_nucleus_work_size(n), np.uint8)
            self._size = n
        count = lib.l2c_nucleus(logits.ctypes.data, n, temperature, topp, sampler.NEGLIGIBLE,
                                sampler.TINY, self._ids.ctypes.data, self._cdf.ctypes.data,
                                self._work.ctypes.data)
        if count < 0:
            _raise_last_error(lib)
        return (self._ids[:count], self._cdf[:count]) if count else None


_buffers = threading.local()  # a Nucleus per thread: ctypes lets go of the GIL during the call


def draw(logits: np.ndarray, temperature: float, topp: float, coin: float) -> int | None:
    """The engine's top-p draw (sampler.EngineSampling.draw): the list from l2c_nucleus, and
    sampler.choose on it."""
    if not hasattr(_buffers, "nucleus"):
        _buffers.nucleus = Nucleus()
    found = _buffers.nucleus(logits, temperature, topp)
    return None if found is None else sampler.choose(*found, np.float32(coin))


def argmax(logits: np.ndarray) -> int | None:
    """The engine's greedy choice (sampler.EngineSampling.argmax): l2c_argmax, None for a NaN."""
    lib = load_library()
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    token = lib.l2c_argmax(logits.ctypes.data, len(logits))
    if token < -1:
        _raise_last_error(lib)
    return token if token >= 0 else None


def choose(ids: np.ndarray, cdf: np.ndarray, coin: float) -> int:
    """The engine's l2c_choose (sampler.choose in C, which the page's engine calls)."""
    ids = np.ascontiguousarray(ids, dtype=np.int32)
    cdf = np.ascontiguousarray(cdf, dtype=np.float32)
    token = load_library().l2c_choose(ids.ctypes.data, cdf.ctypes.data, len(ids), coin)
    if token < 0:
        _raise_last_error(load_library())
    return token


def q8_matmul(xq: np.ndarray, xs: np.ndarray, wq: np.ndarray, ws: np.ndarray) -> np.ndarray:
    """The engine's int8 matmul (runq.c's): W (d, n) int8 with scales ws (d, n / group) times x (n,)
    int8 in [-127, 127] with scales xs (n / group,) -> (d,) float32. For tests of the kernel."""
    d, n = wq.shape
    group_size = n // xs.shape[0]
    arrays = [np.ascontiguousarray(a, dtype=t) for a, t in
              [(xq, np.int8), (xs, np.float32), (wq, np.int8), (ws, np.float32)]]
    out = np.zeros(d, np.float32)
    if load_library().l2c_q8_matmul(out.ctypes.data, *(a.ctypes.data for a in arrays), n, d,
                                    group_size) != 0:
        _raise_last_error(load_library())
    return out


def rope_table(head_size: int, positions: int) -> np.ndarray:
    """RoPE's cos and sin as this (glibc-linked) engine computes them, as run.c does:
    (positions, head_size / 2, 2) float32. The site ships these for the WebAssembly engine."""
    out = np.zeros((positions, head_size // 2, 2), np.float32)
    if load_library().l2c_rope_table(out.ctypes.data, head_size, positions) != 0:
        _raise_last_error(load_library())
    return out
def cores_available() -> int:
    """The CPU cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def threads_from_env() -> int:
    """LLAMA2C_THREADS as a thread count: unset, empty or 0 means automatic.

    A count above the cores available is lowered to them, with a note on stderr: threads that wait
    for a core stall every matmul (16 threads on 2 cores ran stories260K at 190 tok/s, 1 at 4500).
    """
    text = os.environ.get(THREADS_ENV, "").strip()
    if not text:
        return 0
    try:
        wanted = int(text)
    except ValueError:
        raise EngineError(f"{THREADS_ENV}={text!r} is not a number of threads "
                          "(use a whole number, or 0 for automatic)") from None
    if wanted < 0:
        raise EngineError(f"{THREADS_ENV}={wanted} is negative (use 0 for automatic)")
    cores = cores_available()
    if wanted > cores:
        print(f"llama2c: {THREADS_ENV}={wanted} lowered to {cores}, the cores available",
              file=sys.stderr)
        return cores
    return wanted


def _raise_last_error(lib: ctypes.CDLL) -> None:
    message = lib.l2c_last_error().decode("utf-8", "replace")
    code = lib.l2c_last_error_code()
    raise (CheckpointError if code in _CHECKPOINT_CODES else EngineError)(message)


class NativeModel:
    """A loaded checkpoint in the native engine. Implements `backend.Backend`."""

    def __init__(self, data: mmap.mmap | bytes | bytearray, *, name: str = "model",
                 threads: int | None = None):
        self._lib = lib = load_library()
        self.name = name
        # The engine takes the buffer over: it rearranges fp32 weights in place for its kernel and
        # reads them there until close(). An mmap from open() is private (copy on write), so the
        # file is never touched; other bytes are copied once, so the caller's object is not either.
        if not isinstance(data, mmap.mmap):
            data = bytearray(data)
        self._data = data
        self._array = np.frombuffer(data, dtype=np.uint8) if len(data) else np.zeros(0, np.uint8)
        address = self._array.ctypes.data if len(data) else None
        cfg = (ctypes.c_int * 7)()
        if lib.l2c_check(address, len(data), cfg) != 0:
            _raise_last_error(lib)
        self._engine = lib.l2c_load(address, len(data))
        if not self._engine:
            _raise_last_error(lib)
        if threads is None:
            threads = threads_from_env()
        self.threads = lib.l2c_set_threads(self._engine, threads)
        shared = lib.l2c_shared_classifier(self._engine) == 1
        self.config = Config(*cfg, shared_classifier=shared)
        self.format = "int8" if lib.l2c_format(self._engine) == 2 else "fp32"
        self.group_size = lib.l2c_group_size(self._engine)
        self._logits_ptr: int | None = None
        self._logits: np.ndarray | None = None

    @classmethod
    def open(cls, path: str | os.PathLike, threads: int | None = None) -> "NativeModel":
        """Memory-maps a checkpoint file and loads it."""
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) if size else b""
        except OSError as e:
            raise CheckpointError(f"cannot open model {path}: {e.strerror or e}") from None
        return cls(data, name=str(path), threads=threads)

    def forward(self, token: int, pos: int) -> np.ndarray:
        if self._engine is None:
            raise EngineError("the model is closed")
        # The engine checks these too; checking here keeps ctypes from wrapping big ints to 32 bits.
        if not 0 <= token < self.config.vocab_size:
            raise EngineError(f"token {token} out of range [0, {self.config.vocab_size})")
        if not 0 <= pos < self.config.seq_len:
            raise EngineError(f"position {pos} out of range [0, {self.config.seq_len})")
        out = self._lib.l2c_forward(self._engine, token, pos)
        if not out:
            _raise_last_error(self._lib)
        address = ctypes.addressof(out.contents)
        if address != self._logits_ptr:  # the engine's logits buffer never moves; view it once
            self._logits = np.ctypeslib.as_array(out, shape=(self.config.vocab_size,))
            self._logits_ptr = address
        return self._logits

    def expf(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        return expf(x, out)

    def draw(self, logits: np.ndarray, temperature: float, topp: float, coin: float
             ) -> int | None:
        return draw(logits, temperature, topp, coin)

    def argmax(self, logits: np.ndarray) -> int | None:
        return argmax(logits)

    def close(self) -> None:
        if getattr(self, "_engine", None):
            self._lib.l2c_free(self._engine)
            self._engine = None
        self._logits = None

    def __enter__(self) -> "NativeModel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

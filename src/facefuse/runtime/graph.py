"""An ONNX graph run by ONNX Runtime: a shipped or exported model, from a file or bytes.

Only ONNX Runtime is needed (imported when a graph is opened, not before). ``device`` names
where it runs, as elsewhere in facefuse: ``auto`` (CUDA when this onnxruntime has the CUDA
provider, else the CPU), ``cpu``, ``cuda`` or ``cuda:N`` (needs ``onnxruntime-gpu``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

CUDA_PROVIDER = "CUDAExecutionProvider"


def check_device_name(device: str) -> str:
    """``device`` if it is one facefuse knows (``auto``, ``cpu``, ``cuda``, ``cuda:N``).

    Raises:
        ValueError: any other name.
    """
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
    return device


def onnxruntime():
    """The ``onnxruntime`` module (imported on first use).

    Raises:
        ImportError: it is not installed, with the command that installs it.
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ImportError(f"running a model needs ONNX Runtime, a dependency of facefuse "
                          f"({exc}): pip install onnxruntime") from None
    return ort


def providers_for(device: str) -> list:
    """The ONNX Runtime execution providers that run a graph on ``device``.

    Raises:
        ValueError: an unknown device, or CUDA asked for where this onnxruntime has no CUDA
            provider.
    """
    ort = onnxruntime()

    check_device_name(device)
    available = ort.get_available_providers()
    if device == "auto":
        device = "cuda" if CUDA_PROVIDER in available else "cpu"
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if CUDA_PROVIDER not in available:
        raise ValueError(f"device {device!r}: this onnxruntime ({ort.__version__}) has no CUDA "
                         f"provider (pip install onnxruntime-gpu), or use device 'cpu'")
    index = int(device.split(":")[1]) if ":" in device else 0
    return [(CUDA_PROVIDER, {"device_id": index}), "CPUExecutionProvider"]


def quiet_threads(options: Any) -> None:
    """Session ``options`` whose idle intra-op threads sleep instead of spinning: the
    analyzer runs several sessions in turn (the model, both identity networks) beside
    OpenCV's detector, and threads left spinning by one session take the cores from the
    next. A session that names no intra-op thread count gets the process's own, where
    :func:`facefuse.runtime.threads.set_session_threads` set one."""
    from facefuse.runtime.threads import session_threads

    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not options.intra_op_num_threads and session_threads():
        options.intra_op_num_threads = session_threads()


#: whether sessions opened from now on use ONNX Runtime's CPU memory arena
_cpu_arena = [True]


def use_cpu_arena(enabled: bool) -> None:
    """Whether the ONNX Runtime sessions this process opens from now on keep a CPU memory
    arena (ONNX Runtime's default, and facefuse's unless told otherwise).

    The arena keeps, for the life of a session, the most working memory any batch shape has
    needed, rounded up: a server fed batches of 1 to 16 faces held 520 to 560 MB resident
    with it, and without it 230 to 480 MB as batches came and went, about 310 at the median
    (both with :mod:`facefuse.service.heap`'s care); flat either way once the largest batch
    has run. Without it each run allocates from the system allocator: on the 2-core CPU
    about 1.5 % more CPU time a photo one at a time and 7 to 13 % more in batches of 8 to 16
    (measured on a busy machine; docs/SERVICE.md). ``facefuse serve`` turns it off
    (``--cpu-arena`` keeps it).
    """
    _cpu_arena[0] = bool(enabled)


def session_options(threads: int | None = None) -> Any:
    """ONNX Runtime session options as facefuse runs every graph: quiet idle threads
    (:func:`quiet_threads`), ``threads`` intra-op threads (None: one per core), the CPU
    memory arena as :func:`use_cpu_arena` last set it, and int8 constant weights folded at
    load."""
    options = onnxruntime().SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
    options.enable_cpu_mem_arena = _cpu_arena[0]
    quiet_threads(options)
    # int8 weights (DequantizeLinear of constants) folded into float32 once, at load, not
    # dequantised on every run (the age tail's graph)
    options.add_session_config_entry("session.disable_quant_qdq", "1")
    return options


class OnnxGraph:
    """An ONNX model (a file path or its bytes) in an ONNX Runtime session.

    Args:
        model: the ``.onnx`` file, or the serialised graph.
        device: see the module's docstring.
        threads: intra-op threads (None: ONNX Runtime's default, one per core).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a graph ONNX Runtime can load, or the device is refused.
    """

    def __init__(self, model: str | Path | bytes, device: str = "cpu",
                 threads: int | None = None) -> None:
        ort = onnxruntime()
        if not isinstance(model, bytes):
            if not Path(model).is_file():
                raise FileNotFoundError(f"ONNX graph {model} does not exist")
            model = str(model)
        options = session_options(threads)
        providers = providers_for(device)
        try:
            self.session = ort.InferenceSession(model, options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            what = "the graph" if isinstance(model, bytes) else model
            raise ValueError(f"{what}: ONNX Runtime cannot load it ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:200]})") from None
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.providers = self.session.get_providers()

    @property
    def on_gpu(self) -> bool:
        return self.providers[0] == CUDA_PROVIDER

    def run(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Every output, by name, for one float32 input batch."""
        arrays = self.session.run(None, {self.input_name: np.ascontiguousarray(
            inputs, dtype=np.float32)})
        return dict(zip(self.output_names, arrays, strict=True))

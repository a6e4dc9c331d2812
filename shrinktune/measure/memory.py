"""Memory a step needs on top of what is already allocated, and the memory a model's tensors hold.

`peak_memory_bytes(fn, device)` is the peak *additional* tensor memory `fn` needed: the highest point reached by
(bytes allocated during `fn` − bytes freed during `fn`), as seen by PyTorch's allocator. Tensors that existed
before `fn` (model weights, a cache) are not in it; `tensor_bytes(model)` gives the weights, so the peak resident
tensor memory of a step is roughly `tensor_bytes(model) + peak_memory_bytes(step)`.

- CUDA: `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats`, minus `memory_allocated` before.
- CPU: process RSS would mix in the Python heap, the allocator's caching and pages the OS has not reclaimed, so
  instead the torch profiler records every allocation and free of the CPU allocator (`profile_memory=True`);
  walking those events in time order, the running sum of their sizes is the additional memory in use, and its
  maximum is the peak. Frees of tensors allocated before `fn` started carry no size, so they are not credited:
  the figure is then an upper bound. Memory outside PyTorch's allocator (numpy, tokenizers) is not counted.

    from shrinktune.measure import peak_memory_bytes, tensor_bytes
    peak = peak_memory_bytes(lambda: model.generate(**batch))
"""

import contextlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from itertools import chain

import torch
from torch.profiler import ProfilerActivity, profile

from shrinktune.measure.params import unique_tensors

logger = logging.getLogger(__name__)

# Lines the profiler's C++ side writes straight to stderr: Kineto's start/stop banners, and a one-time warning
# when a tensor made before profiling is freed (expected here: the model's own outputs, old gradients).
_PROFILER_NOISE = re.compile(
    rb"^(USDT|STAGE):|Memory block of unknown size was allocated before the profiling|External init callback must run"
)


@contextlib.contextmanager
def _profiler_noise_filtered() -> Iterator[None]:
    """Holds back stderr (file descriptor 2) while active, then writes it back without the profiler's lines."""
    try:
        sys.stderr.flush()
        saved_fd = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable stderr: nothing to protect
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                sys.stderr.flush()
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            held.seek(0)
            kept = [line for line in held.read().splitlines(keepends=True) if not _PROFILER_NOISE.search(line)]
            if kept:
                os.write(2, b"".join(kept))


def _cpu_peak_bytes(fn: Callable[[], object]) -> int:
    if torch.autograd._profiler_enabled():
        raise RuntimeError(
            "peak_memory_bytes on CPU runs its own torch profiler and cannot start inside another profiling "
            "session; call it outside `torch.profiler.profile`."
        )
    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _profiler_noise_filtered():
        prof.start()
        try:
            fn()
        finally:
            prof.stop()
    # Raw events keep every allocation apart; prof.events() folds those made inside an op into the op.
    profiler = prof.profiler
    if profiler is None or profiler.kineto_results is None:  # set by start() / stop() above
        raise RuntimeError("the torch profiler kept no results; peak_memory_bytes cannot measure this call.")
    deltas = [
        (event.start_ns(), event.nbytes())  # type: ignore[attr-defined]  # torch's stubs lack it
        for event in profiler.kineto_results.events()
        if event.name() == "[memory]" and event.device_type() == torch.autograd.DeviceType.CPU
    ]
    deltas.sort(key=lambda pair: pair[0])  # stable: events sharing a timestamp keep their recorded order
    in_use = peak = 0
    for _, nbytes in deltas:
        in_use += nbytes
        peak = max(peak, in_use)
    logger.debug("CPU peak %d bytes over %d allocator events", peak, len(deltas))
    return peak


def _cuda_peak_bytes(fn: Callable[[], object], device: torch.device) -> int:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return max(0, torch.cuda.max_memory_allocated(device) - before)


def peak_memory_bytes(fn: Callable[[], object], device: torch.device | str = "cpu") -> int:
    """Peak additional tensor memory `fn` needed while it ran, not counting tensors that existed before.

    Args:
        fn: The step to measure, e.g. a forward and backward pass; its return value is dropped.
        device: Whose allocator to watch: "cpu" (through the torch profiler) or a CUDA device.

    Returns:
        The maximum over the run of (bytes allocated − bytes freed since `fn` started), at least 0.

    Raises:
        ValueError: If `device` is neither CPU nor CUDA.
        RuntimeError: On CPU, if a torch profiler is already running.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return _cuda_peak_bytes(fn, device)
    if device.type == "cpu":
        return _cpu_peak_bytes(fn)
    raise ValueError(f"peak_memory_bytes measures 'cpu' or 'cuda' devices, got {str(device)!r}.")


def tensor_bytes(module: torch.nn.Module) -> int:
    """Bytes held by a module's parameters and buffers, tied or shared tensors counted once.

    Args:
        module: Any module, e.g. a seq2seq model.

    Returns:
        Sum of `numel() * element_size()` over the distinct parameters and buffers.
    """
    tensors = unique_tensors(chain(module.parameters(), module.buffers()))
    return sum(t.numel() * t.element_size() for t in tensors)

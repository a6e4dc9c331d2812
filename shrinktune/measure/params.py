"""Model size: parameter counts and checkpoint bytes on disk.

Tied weights (an embedding shared with the LM head) are one set of numbers, so they count once: tensors are told
apart by the memory they occupy, not by the attribute that names them.

    from shrinktune.measure import count_parameters, checkpoint_size_bytes
    count_parameters(model), checkpoint_size_bytes("runs/trial_3/checkpoint")
"""

import os
from collections.abc import Iterable
from pathlib import Path

import torch


def _storage_key(tensor: torch.Tensor) -> tuple:
    # Tensors without real storage (meta, fake) all report address 0, so only identity tells them apart.
    if tensor.device.type == "meta" or tensor.untyped_storage().data_ptr() == 0:
        return ("id", id(tensor))
    return (
        str(tensor.device),
        tensor.untyped_storage().data_ptr(),
        tensor.storage_offset(),
        tuple(tensor.shape),
        tuple(tensor.stride()),
        tensor.dtype,
    )


def unique_tensors(tensors: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """Drops tensors that are the same numbers in memory as one seen before (tied or aliased weights).

    Args:
        tensors: Parameters, buffers or any tensors.

    Returns:
        The first tensor of each distinct (storage, offset, shape, stride, dtype), in input order.
    """
    seen: set[tuple] = set()
    kept = []
    for tensor in tensors:
        key = _storage_key(tensor)
        if key not in seen:
            seen.add(key)
            kept.append(tensor)
    return kept


def count_parameters(module: torch.nn.Module) -> int:
    """Number of parameter elements in `module`, tied or shared weights counted once.

    Args:
        module: Any module, e.g. a seq2seq model.

    Returns:
        Sum of `numel()` over the distinct parameters.
    """
    return sum(p.numel() for p in unique_tensors(module.parameters()))


def checkpoint_size_bytes(path: str | os.PathLike) -> int:
    """Bytes a checkpoint occupies on disk: a file's size, or the sum over all files below a directory.

    Symbolic links are followed, so a checkpoint whose files point into a cache counts the real files.

    Args:
        path: A checkpoint file or directory (e.g. what `save_pretrained` wrote).

    Returns:
        Total size in bytes.

    Raises:
        FileNotFoundError: If `path` does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint_size_bytes: no file or directory at {str(path)!r}; check the path.")
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())

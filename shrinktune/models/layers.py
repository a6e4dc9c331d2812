"""Which teacher layers a shallower student keeps.

Shleifer & Rush copy a spread of teacher layers into the student decoder (distilbart); Campos & Zhai drop layers
for asymmetric pruning with maps of their own. Their published maps are used where they exist; other sizes keep the
first and last layer and space the rest evenly. A student may also name its kept layers outright, e.g. a prefix.
"""

from __future__ import annotations

from collections.abc import Sequence

from shrinktune.errors import ConfigError

# Teacher depth → student depth → kept teacher layers (Shleifer & Rush 2020, Table 9 / distillation code).
DISTILBART_MAPS: dict[int, dict[int, list[int]]] = {
    12: {1: [0], 2: [0, 6], 3: [0, 6, 11], 4: [0, 4, 8, 11], 6: [0, 2, 4, 7, 9, 11], 9: [0, 1, 2, 4, 5, 7, 9, 10, 11],
         12: list(range(12))},
    16: {4: [0, 5, 10, 15], 8: [0, 2, 4, 6, 8, 10, 12, 15], 16: list(range(16))},
}
# Campos & Zhai 2023 (asymmetric pruning of FLAN-T5-base, 12 decoder layers).
ASYMMETRIC_MAPS: dict[int, dict[int, list[int]]] = {
    12: {2: [0, 11], 4: [0, 3, 8, 11], 6: [0, 2, 4, 6, 8, 10], 12: list(range(12))},
}
LAYER_MAPS = {"distilbart": DISTILBART_MAPS, "asymmetric": ASYMMETRIC_MAPS}


def layers_to_keep(student_layers: int, teacher_layers: int, scheme: str = "distilbart") -> list[int]:
    """Indices of the teacher layers a student with `student_layers` layers copies, in order."""
    if scheme not in LAYER_MAPS:
        raise ConfigError(f"layer map must be one of {', '.join(LAYER_MAPS)}, got {scheme!r}.")
    if not 1 <= student_layers <= teacher_layers:
        raise ConfigError(
            f"a student needs between 1 and {teacher_layers} layers (the teacher's depth), got {student_layers}."
        )
    known = LAYER_MAPS[scheme].get(teacher_layers, {}).get(student_layers)
    if known is not None:
        return list(known)
    if student_layers == 1:
        return [0]
    step = (teacher_layers - 1) / (student_layers - 1)
    return [round(i * step) for i in range(student_layers)]


def resolve_layers(layers: int | Sequence[int] | None, teacher_layers: int, scheme: str = "distilbart",
                   side: str = "decoder") -> list[int]:
    """Kept teacher layers from a depth (mapped by `scheme`), an explicit increasing list, or None (all)."""
    if layers is None:
        return list(range(teacher_layers))
    if isinstance(layers, int):
        return layers_to_keep(layers, teacher_layers, scheme)
    kept = [int(i) for i in layers]
    if not kept or kept != sorted(set(kept)) or kept[0] < 0 or kept[-1] >= teacher_layers:
        raise ConfigError(
            f"kept {side} layers must be increasing, distinct indices in 0..{teacher_layers - 1}, got {list(layers)}."
        )
    return kept

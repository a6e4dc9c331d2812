"""Which teacher layers a shallower student keeps.

Shleifer & Rush copy a spread of teacher layers into the student decoder (distilbart); Campos & Zhai drop layers
the same way for asymmetric pruning. Their published maps are used where they exist; other sizes keep the first
and last layer and space the rest evenly.
"""

from __future__ import annotations

from shrinktune.errors import ConfigError

# Teacher depth → student depth → kept teacher layers (Shleifer & Rush 2020, Table 9 / distillation code).
DISTILBART_MAPS: dict[int, dict[int, list[int]]] = {
    12: {1: [0], 2: [0, 6], 3: [0, 6, 11], 4: [0, 4, 8, 11], 6: [0, 2, 4, 7, 9, 11], 9: [0, 1, 2, 4, 5, 7, 9, 10, 11], 12: list(range(12))},
    16: {4: [0, 5, 10, 15], 8: [0, 2, 4, 6, 8, 10, 12, 15], 16: list(range(16))},
}


def layers_to_keep(student_layers: int, teacher_layers: int) -> list[int]:
    """Indices of the teacher layers a student with `student_layers` layers copies, in order."""
    if not 1 <= student_layers <= teacher_layers:
        raise ConfigError(
            f"a student needs between 1 and {teacher_layers} layers (the teacher's depth), got {student_layers}."
        )
    known = DISTILBART_MAPS.get(teacher_layers, {}).get(student_layers)
    if known is not None:
        return list(known)
    if student_layers == 1:
        return [0]
    step = (teacher_layers - 1) / (student_layers - 1)
    return [round(i * step) for i in range(student_layers)]

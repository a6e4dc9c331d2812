"""Retrain the embedded teacher and rewrite the file the package ships: `python -m platform.prepare_teacher`.

The MiniLM bert2bert is fine-tuned on ACLSum's training pairs with `TeacherRecipe()` (about 7 minutes on 2 CPU
cores); its trained decoder tensors are written in int8 to `shrinktune/assets/embedded_teacher.safetensors`.
"""

import sys

from shrinktune.cli import prepare_teacher_main

if __name__ == "__main__":
    sys.exit(prepare_teacher_main())

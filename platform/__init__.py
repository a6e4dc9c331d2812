"""Shrinktune's entry points (`python -m platform.search ...`), standing in for the stdlib `platform` module.

Run from the repository root, this package shadows the standard library's `platform`, which torch, ray, pytest
and many others import for `platform.system()`, `platform.uname()` and friends. So it first executes the real
stdlib module and re-exports every name it defines; the entry points themselves are thin modules beside this file
that call into the `shrinktune` library. Nothing else belongs here.
"""

import importlib.util as _importlib_util
import os as _os
import sysconfig as _sysconfig


def _load_stdlib_platform():
    path = _os.path.join(_sysconfig.get_paths()["stdlib"], "platform.py")
    # Named "platform" so that classes it defines (uname_result, ...) pickle and repr as the stdlib's do.
    spec = _importlib_util.spec_from_file_location("platform", path)
    module = _importlib_util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_stdlib_platform = _load_stdlib_platform()
globals().update({name: value for name, value in vars(_stdlib_platform).items() if not name.startswith("__")})
__all__ = [name for name in vars(_stdlib_platform) if not name.startswith("_")]

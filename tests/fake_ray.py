"""A stand-in for the driver's Ray calls, run in this process: `ray.remote(fn).options(...).remote(*args)`, then
`ray.wait([ref], timeout=...)` and `ray.get(ref)` (the driver waits on its tasks in steps: `runner._awaited`)."""

from types import SimpleNamespace


class FakeRay:
    def remote(self, fn):
        return SimpleNamespace(options=lambda **_: SimpleNamespace(remote=lambda *a: fn(*a)))

    def wait(self, refs, timeout=None):
        return list(refs), []

    def get(self, value):
        return value

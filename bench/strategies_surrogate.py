"""Search strategies on a surrogate of recorded trials: which levers could move goal 2, in minutes, not hours.

    python bench/strategies_surrogate.py --records bench/strategies_tpefix bench/strategies_96x1 --seeds 20 \
        --out bench/strategies_surrogate.md
    python bench/strategies_surrogate.py --smoke --out /tmp/surrogate.md     # 2 seeds, 3 minutes; what CI runs

`bench/strategies.py` measures a strategy for real: 94 minutes for three seeds, one shot a session. This script
asks the same question of a surrogate: an extra-trees regressor fitted to the trials `bench/strategies.py` recorded
(each configuration → R-1 / teacher, speed-up, training memory / teacher, seconds to train), so that a strategy's
draws cost the seconds a real trial of that configuration took, and its students score what such students scored.
Each strategy is the same Optuna study as in `bench/strategies.py` over the space's own `suggest` (enqueued points
through `sampler_point`), stopped at `--minutes` of simulated training time; the hypervolume is
`shrinktune.front.hypervolume` of the students above the quality floor, scaled by the teacher. Noise is added to
each prediction (R-1 / teacher ± 0.02, speed-up × e^±0.05, one draw per trial) because real re-measurement has it
and a hypervolume, a maximum over students, rewards it.

The report first checks the surrogate against the records it was fitted to (each recorded strategy's mean
hypervolume at the budget, recorded and simulated), then runs the levers below, then the **oracle**: a greedy
schedule that knows every configuration's predicted outcome and trains, until the budget, the one that adds the
most hypervolume per second. The oracle's hypervolume bounds what any strategy can reach on these students.

A lever it shows large is then worth a real `bench/strategies.py` run; one it shows small is not. It cannot show a
lever that trains *better students* than those recorded (a new method, longer training): the surrogate only knows
the students that were trained.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing it

import numpy as np  # noqa: E402
import optuna  # noqa: E402
import torch  # noqa: E402

from bench.compression import machine_lines  # noqa: E402
from bench.parts import fail  # noqa: E402
from bench.strategies import hypervolume_at  # noqa: E402
from shrinktune.errors import ConfigError, UserError  # noqa: E402
from shrinktune.front import hypervolume  # noqa: E402
from shrinktune.search.samplers import make_sampler  # noqa: E402
from shrinktune.search.space import SearchSpace  # noqa: E402

FEATURES = ("latent_dim", "decoder_layers", "encoder_layers", "learning_rate", "epochs")
OBJECTIVES = {"rouge1": "max", "latency_ms": "min", "train_peak_mb": "min"}
ONE = dict.fromkeys(OBJECTIVES, 1.0)  # everything is already divided by the teacher
QUALITY_NOISE, SPEED_NOISE = 0.02, 0.05
CEILING = 1.1  # the cost pre-screen's quality ceiling (× the teacher): no student is assumed to pass it


def features(config: dict) -> list[float]:
    """The surrogate's inputs; a configuration without `encoder_layers` keeps the teacher's 6."""
    return [config["latent_dim"], config["decoder_layers"], config.get("encoder_layers") or 6,
            math.log(config["learning_rate"]), config["epochs"]]


def load_records(folders: list[Path]) -> list[dict]:
    records = [json.loads(path.read_text()) for folder in folders for path in sorted(folder.glob("*.json"))]
    if not records:
        raise UserError(f"no records (*.json written by bench/strategies.py --keep) in {', '.join(map(str, folders))}; "
                        "pass folders that hold them.")
    return records


class Surrogate:
    """Configuration → (R-1 / teacher, speed-up, training memory / teacher, seconds to train), fitted to records."""

    def __init__(self, records: list[dict]):
        try:
            from sklearn.ensemble import ExtraTreesRegressor
        except ImportError:
            raise UserError("the surrogate needs scikit-learn (installed with mlflow); pip install scikit-learn.") \
                from None
        rows, targets = [], []
        for record in records:
            reference = record["reference"]
            for entry in record["trials"]:
                if entry["status"] != "complete":
                    continue
                metrics = entry["metrics"]
                rows.append(features(entry["config"]))
                targets.append([metrics["rouge1"] / reference["rouge1"],
                                reference["latency_ms"] / metrics["latency_ms"],
                                metrics["train_peak_mb"] / reference["train_peak_mb"],
                                entry["end_s"] - entry["start_s"]])
        if len(rows) < 10:
            raise UserError(f"the records hold {len(rows)} trained students; the surrogate needs at least 10.")
        self.trained = len(rows)
        self.model = ExtraTreesRegressor(n_estimators=300, min_samples_leaf=2, random_state=0).fit(rows, targets)

    def predict(self, configs: list[dict]) -> np.ndarray:
        return self.model.predict([features(c) for c in configs])

    def draw(self, config: dict, rng: np.random.Generator) -> tuple[dict, float]:
        """One simulated trial: its scaled objectives (with noise) and its seconds to train."""
        quality, speedup, memory, seconds = self.predict([config])[0]
        quality += rng.normal(0, QUALITY_NOISE)
        speedup *= math.exp(rng.normal(0, SPEED_NOISE))
        return {"rouge1": quality, "latency_ms": 1 / speedup, "train_peak_mb": memory}, float(seconds)


def optimistic_gain(points: list[dict], latency: float, memory: float) -> float:
    """What a student of these costs could add to the hypervolume at the pre-screen's quality ceiling."""
    best = {"rouge1": CEILING, "latency_ms": latency, "train_peak_mb": memory}
    return hypervolume([*points, best], OBJECTIVES, ONE) - hypervolume(points, OBJECTIVES, ONE)


def simulate(space: SearchSpace, surrogate: Surrogate, seed: int, budget_s: float, *, sampler: str = "default",
             enqueue: bool = True, startup: int | None = None, floor: float = 0.5,
             cost_rate: float | None = None) -> float:
    """One strategy × seed on the surrogate: the hypervolume of what it trained within `budget_s`.

    `cost_rate` k: a draw is told to Optuna as pruned, untrained, when the most it could add (`optimistic_gain`)
    per predicted second of training is under k × the hypervolume per second the search has gained so far.
    """
    rng = np.random.default_rng(10_000 + seed)
    startup = space.search.random_trials if startup is None else startup
    if sampler == "random":
        chosen = optuna.samplers.RandomSampler(seed=seed)
    else:
        chosen = make_sampler(space.search.sampler if sampler == "default" else sampler, seed, startup_trials=startup)
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"], sampler=chosen)
    if enqueue and sampler != "random":
        for point in space.enqueue:
            study.enqueue_trial(space.sampler_point(point))
    clock, points, skipped = 0.0, [], 0
    while clock < budget_s and skipped < 200:
        trial = study.ask()
        config = space.suggest(trial)
        scaled, seconds = surrogate.draw(config, rng)
        if cost_rate is not None and len(points) >= len(space.enqueue) and clock > 0:
            rate = hypervolume(points, OBJECTIVES, ONE) / clock
            if optimistic_gain(points, scaled["latency_ms"], scaled["train_peak_mb"]) / seconds < cost_rate * rate:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                skipped += 1
                continue
        clock += seconds
        if clock > budget_s:
            break
        if scaled["rouge1"] >= floor:
            points.append(scaled)
        study.tell(trial, [scaled[m] for m in OBJECTIVES])
    return hypervolume(points, OBJECTIVES, ONE)


def grid(space: SearchSpace, steps: int = 7) -> list[dict]:
    """Configurations across the space's ranges: widths and depths whole, the learning rate in `steps`."""
    by_name: dict[str, list] = {}
    for dimension in space.dimensions:
        by_name.setdefault(dimension.name, []).append(dimension)
    configs = []
    widths = by_name["latent_dim"][0].choices
    encoders = (range(by_name["encoder_layers"][0].low, by_name["encoder_layers"][0].high + 1)
                if "encoder_layers" in by_name else (6,))
    for width, layers, encoder in itertools.product(widths, range(by_name["decoder_layers"][0].low,
                                                                  by_name["decoder_layers"][0].high + 1), encoders):
        values = {"latent_dim": width, "decoder_layers": layers, "encoder_layers": encoder}
        active = {name: next(d for d in options if d.active(values)) for name, options in by_name.items()
                  if name in ("learning_rate", "epochs")}
        rates = np.geomspace(active["learning_rate"].low, active["learning_rate"].high, steps)
        for rate, epochs in itertools.product(rates, range(active["epochs"].low, active["epochs"].high + 1)):
            configs.append({**values, "learning_rate": float(rate), "epochs": epochs})
    return configs


def oracle(space: SearchSpace, surrogate: Surrogate, budget_s: float,
           floor: float = 0.5) -> tuple[float, list[tuple[float, str]]]:
    """Greedy: train, until the budget, the configuration that adds the most hypervolume per second."""
    configs = grid(space)
    predicted = surrogate.predict(configs)
    points, clock, chosen = [], 0.0, []
    while True:
        base, best = hypervolume(points, OBJECTIVES, ONE), None
        for config, (quality, speedup, memory, seconds) in zip(configs, predicted):
            if clock + seconds > budget_s or quality < floor:
                continue
            point = {"rouge1": quality, "latency_ms": 1 / speedup, "train_peak_mb": memory}
            gain = hypervolume([*points, point], OBJECTIVES, ONE) - base
            if best is None or gain / seconds > best[0]:
                best = (gain / seconds, gain, config, point, seconds)
        if best is None or best[1] <= 1e-5:
            return base, chosen
        _, gain, config, point, seconds = best
        clock += seconds
        points.append(point)
        chosen.append((gain, f"{config['latent_dim']} × {config['decoder_layers']}, encoder {config['encoder_layers']}"
                       f", lr {config['learning_rate']:.1e}, {config['epochs']} epochs ({seconds:.0f} s): +{gain:.3f}"))


LEVERS = {  # name → (what it is, simulate's arguments)
    "random": ("Optuna's RandomSampler, nothing enqueued (the baseline)", {"sampler": "random"}),
    "default": ("the space as it ships: its sampler, start-up trials and enqueued configurations", {}),
    "default, nothing enqueued": ("the same sampler drawing from its first trial", {"enqueue": False}),
    "gp": ("GPSampler (log expected hypervolume improvement), enqueued as the default", {"sampler": "gp"}),
    "nsga2": ("NSGA-II, population 6, enqueued as the default", {"sampler": "nsga2", "startup": 6}),
    "tpe, 10 start-up": ("TPE with Optuna's default 10 random start-up trials", {"startup": 10}),
    "default + cost rate 0.5": ("a draw whose best case adds under 0.5 × the search's hypervolume per second "
                                "so far, per second it would train, is skipped", {"cost_rate": 0.5}),
    "default + cost rate 1": ("... under 1 × that rate", {"cost_rate": 1.0}),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", nargs="+", type=Path,
                        default=[Path("bench/strategies_tpefix"), Path("bench/strategies_96x1")])
    parser.add_argument("--space", default="search_spaces/summarization.yaml")
    parser.add_argument("--seeds", type=int, default=20, help="seeds per strategy")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--smoke", action="store_true", help="2 seeds, 3 minutes, three levers")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds, args.minutes = 2, 3.0
    if args.seeds < 2 or args.minutes <= 0:
        raise ConfigError(f"--seeds must be at least 2 and --minutes above 0, got {args.seeds} and {args.minutes}.")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    records = load_records(args.records)
    space = SearchSpace.load(args.space)
    surrogate = Surrogate(records)
    budget_s = args.minutes * 60
    seeds = range(args.seeds)
    floor = space.search.quality_floor
    command = "python bench/strategies_surrogate.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = ["# Search strategies on a surrogate of recorded trials", "", f"Command: `{command}`", "",
             *machine_lines(argparse.Namespace(device=torch.device("cpu"))),
             f"- Surrogate: extra trees fitted to {surrogate.trained} trained students of "
             f"{len(records)} runs in {', '.join(map(str, args.records))}; space {args.space}; "
             f"{args.seeds} seeds per strategy; {args.minutes:g} minutes of training time each", "",
             "## The surrogate against the runs it was fitted to", "",
             "| strategy | recorded hypervolume at the budget (runs) | surrogate (mean ± std over seeds) |",
             "| --- | --- | --- |"]
    simulated: dict[str, list[float]] = {}
    for name in ("default", "random"):
        recorded = [hypervolume_at(r, budget_s) for r in records if r["strategy"] == name]
        simulated[name] = [simulate(space, surrogate, s, budget_s, floor=floor, **LEVERS[name][1]) for s in seeds]
        shown = f"{statistics.mean(recorded):.3f} ({len(recorded)})" if recorded else "—"
        lines.append(f"| {name} | {shown} | {statistics.mean(simulated[name]):.3f} ± "
                     f"{statistics.stdev(simulated[name]):.3f} |")
    lines += ["", "## Levers", "", "| strategy | what | hypervolume | vs random |", "| --- | --- | --- | --- |"]
    baseline = statistics.mean(simulated["random"])
    names = ("random", "default", "gp") if args.smoke else tuple(LEVERS)
    for name in names:
        what, kwargs = LEVERS[name]
        values = simulated.get(name) or [simulate(space, surrogate, s, budget_s, floor=floor, **kwargs) for s in seeds]
        lines.append(f"| {name} | {what} | {statistics.mean(values):.3f} ± {statistics.stdev(values):.3f} | "
                     f"{statistics.mean(values) / baseline:.2f}x |")
        print(lines[-1], flush=True)
    best, chosen = oracle(space, surrogate, budget_s, floor)
    shown = [text for gain, text in chosen if gain >= 0.001]
    lines += ["", f"**Oracle** (knows every configuration's predicted outcome, no noise): {best:.3f}, "
              f"{best / baseline:.2f}x random; it trains, in order (then {len(chosen) - len(shown)} more students "
              "that add under 0.001 each):", "", *(f"- {text}" for text in shown), ""]
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    try:
        main()
    except (UserError, ConfigError) as error:
        fail(error)

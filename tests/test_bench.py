"""The benchmark scripts under bench/ run end to end in their --smoke mode and write their results file."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

from markdown_tables import markdown_tables

ROOT = Path(__file__).resolve().parents[1]


def test_compression_smoke_writes_the_side_by_side_table(tmp_path):
    out = tmp_path / "compression.md"
    done = subprocess.run([sys.executable, "bench/compression.py", "--smoke", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert f"Command: `python bench/compression.py --smoke --out {out}`" in text
    assert "- Machine: " in text and "torch threads" in text and "- Date: " in text
    header = ("| config | encoder layers | decoder layers | latent | decoder params (M) | total params (M) "
              "| ms/summary | speed-up | train-step peak MB | memory ratio |")
    lines = text.splitlines()
    start = lines.index(header)
    rows = [line.split(" | ") for line in lines[start + 2 :] if line.startswith("| ")]
    rows = rows[: next((i for i, r in enumerate(rows) if len(r) != 10), len(rows))]
    # (2 widths: the teacher's and 32) x (2 decoder depths) x (full, half encoder), the teacher's own shape once
    assert len(rows) == 8
    teacher = rows[0]
    assert teacher[0] == "| teacher" and teacher[7] == "1.00x" and teacher[9] == "1.00 |"
    assert {(r[1], r[2], r[3]) for r in rows} == {
        (enc, dec, latent) for enc in ("2", "1") for dec in ("2", "1") for latent in ("64", "32")}
    assert all(float(r[6]) > 0 and float(r[8]) > 0 for r in rows)
    # a narrower, shallower decoder has fewer decoder parameters and needs less memory to fine-tune
    smallest = next(r for r in rows if (r[1], r[2], r[3]) == ("2", "1", "32"))
    assert float(smallest[4]) < float(teacher[4]) and float(smallest[9].rstrip(" |")) < 1.0
    assert "exactly 8 new tokens" in text and "best possible speed-up" in text
    assert "| speed-up, latent 384 (Falaki & Gras, BART-base) | 2x | not measured (base shape not run) |" in text


def _number(cell: str) -> float | None:
    try:
        return float(cell.removesuffix("x"))
    except ValueError:
        return None


def test_science_smoke_writes_every_table_with_finite_numbers(tmp_path):
    out = tmp_path / "science.md"
    done = subprocess.run([sys.executable, "bench/science.py", "--smoke", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for part in ("setup", "ae", "depth", "methods", "weights"):
        assert f"\n{part}: " in "\n" + done.stdout, done.stdout[-2000:]  # per-part elapsed time, printed
    text = out.read_text()
    assert f"Command: `python bench/science.py --smoke --out {out}`" in text
    assert "- Machine: " in text and "torch threads 1" in text and "- Date: " in text
    tables = markdown_tables(text)
    titles = {title.split(":")[0]: rows for title, rows in tables.items()}
    assert set(titles) == {"ae", "depth", "methods", "weights", "Run time"}
    for title, rows in titles.items():
        assert rows, title
        for row in rows:
            numbers = [_number(cell) for cell in row.values()]
            assert all(math.isfinite(n) for n in numbers if n is not None), (title, row)
            assert not {"nan", "inf", "-inf"} & {cell.lower() for cell in row.values()}, (title, row)
    # one reading per table, with a verdict computed from it
    assert len(re.findall(r"\*\*Reading:\*\* .* \*\*(agrees|disagrees|partly agrees)\*\*", text)) == 4

    ae = titles["ae"]
    assert [row["latent"] for row in ae] == ["8", "16", "24"]
    pca = [float(row["pca MSE"]) for row in ae]
    assert pca == sorted(pca, reverse=True)  # PCA subspaces are nested: a wider latent never reconstructs worse
    assert all(0 < float(row["pca explained var."]) <= 1 for row in ae)

    depth = titles["depth"]
    shapes = [(row["model"], row["encoder layers"], row["decoder layers"]) for row in depth]
    assert shapes == [("teacher", "2", "2"), ("student", "2", "2"), ("student", "1", "2"), ("student", "2", "1")]
    teacher = depth[0]
    assert teacher["speed-up"] == "1.00x" and teacher["train s"] == "-"
    assert depth[2]["kept encoder"] == "0" and depth[3]["kept decoder"] == "0"
    assert float(depth[1]["params (M)"]) == float(teacher["params (M)"])
    assert float(depth[2]["params (M)"]) < float(teacher["params (M)"])
    assert float(depth[3]["decoder params (M)"]) < float(teacher["decoder params (M)"])
    assert all(float(row["ms/summary"]) > 0 for row in depth)

    methods = titles["methods"]
    assert [(row["latent"], row["method"]) for row in methods] == [
        (latent, method) for latent in ("32", "16") for method in ("sft", "kd", "pseudo_labels")]
    assert float(methods[3]["decoder params (M)"]) < float(methods[0]["decoder params (M)"])

    weights = titles["weights"]
    assert [(row["ratio"], row["method"]) for row in weights] == [("2", "svd"), ("2", "ae"), ("4", "svd"), ("4", "ae")]
    for row in weights:  # equal parameter budgets: both methods land within 15 % of before ÷ ratio
        assert abs(float(row["achieved ratio"]) / float(row["ratio"]) - 1) < 0.15, row
        assert 0 < float(row["weight error"])
    assert float(weights[2]["weight error"]) > float(weights[0]["weight error"])  # lower SVD rank, larger error

    assert [row["part"] for row in titles["Run time"]] == [
        "setup (teacher, data, encoder states)", "ae", "depth", "methods", "weights", "total"]


def test_science_rejects_an_unknown_part_in_one_line():
    done = subprocess.run([sys.executable, "bench/science.py", "--smoke", "--parts", "ae,speed"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert re.fullmatch(r"error: --parts takes a comma-separated subset of ae,depth,methods,weights, got "
                        r"\('ae', 'speed'\); e\.g\. --parts ae,weights\.\n", done.stderr), done.stderr


def _mean_std(cell: str) -> tuple[float, float]:
    mean, _, std = cell.partition(" ± ")
    return float(mean), float(std or 0)


def test_search_smoke_reports_hypervolumes_memo_hits_and_shared_savings(tmp_path):
    out = tmp_path / "search.md"
    done = subprocess.run([sys.executable, "bench/search.py", "--smoke", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert f"Command: `python bench/search.py --smoke --out {out}`" in text
    assert "- Machine: " in text and "torch threads 1" in text and "- Date: " in text
    tables = markdown_tables(text)
    table = lambda prefix: next(rows for title, rows in tables.items() if title.startswith(prefix))  # noqa: E731

    running = table("samplers: hypervolume after k trials")
    assert [row["sampler"] for row in running] == ["tpe", "nsga2", "gp", "random"]
    for row in running:
        means = [_mean_std(row[k])[0] for k in ("k=2", "k=3")]
        assert all(math.isfinite(m) and m >= 0 for m in means) and means[0] <= means[1]  # hypervolume never falls
        assert all(math.isfinite(_mean_std(row[k])[1]) for k in ("k=2", "k=3"))

    final = table("samplers: final hypervolume per seed")
    assert [row["sampler"] for row in final] == ["tpe", "nsga2", "gp", "random"]
    for row, run in zip(final, running):
        seeds = [float(row["seed 0"]), float(row["seed 1"])]
        assert all(math.isfinite(h) and h >= 0 for h in seeds)
        assert abs(sum(seeds) / 2 - _mean_std(run["k=3"])[0]) < 1e-4  # the last column of the running table
        # 3 trials x 2 seeds, each either trained or served from the memo
        assert int(row["trials"]) == 6 == int(row["trained"]) + int(row["memo hits"]) and row["failed"] == "0"
    hits = sum(int(row["memo hits"]) for row in final)
    trained = sum(int(row["trained"]) for row in final)
    assert hits >= 5  # every study enqueues the same configuration: only the first one trains it
    assert f"{6 * len(final)} trials in all, {trained} distinct configurations trained, {hits} served from the memo" \
        in text

    shared = table("shared: 3 trials")
    assert [row["trial"] for row in shared] == ["1", "2", "3", "total"]
    # one shared root: the first trial encodes, fits the autoencoder and times its architecture against the teacher;
    # the others share its architecture (timed once), and the pseudo-label trial labels, nothing else
    assert [row["(a) computed"] for row in shared[:3]] == ["autoencoders, encoded, speed", "-", "pseudo-labels"]
    assert [row["(b) computed"] for row in shared[:3]] == [
        "autoencoders, encoded, speed", "autoencoders, encoded, speed", "autoencoders, encoded, pseudo-labels, speed"]
    for column in ("(a) shared s", "(b) own cache s"):
        seconds = [float(row[column]) for row in shared]
        assert all(math.isfinite(s) and s > 0 for s in seconds)
        assert abs(sum(seconds[:3]) - seconds[3]) < 0.2
    assert re.search(r"\*\*Reading:\*\* sharing the cache saves -?\d+\.\d s of \d+\.\d s \(-?\d+%\) over 3 trials\. "
                     r"ROUGE-1 and ROUGE-2 are identical in \(a\) and \(b\) for 3 of 3 trials", text)
    assert [row["part"] for row in table("Run time")] == [
        "setup (teacher prepared and measured)", "samplers", "shared", "total"]



def test_students_bench_scores_each_configuration_and_the_teacher_on_test_pairs(tmp_path, tiny_teacher_dir):
    configs = tmp_path / "configs.jsonl"
    configs.write_text('# a comment\n{"name": "tiny sft", "latent_dim": 16, "decoder_layers": 1, "epochs": 1}\n'
                       '{"name": "tiny pl", "latent_dim": 32, "decoder_layers": 1, "epochs": 1, '
                       '"method": "pseudo_labels"}\n')
    out = tmp_path / "students.md"
    done = subprocess.run([sys.executable, "bench/students.py", str(configs), "--teacher", str(tiny_teacher_dir),
                           "--val-samples", "4", "--test-samples", "4", "--threads", "1", "--cache",
                           str(tmp_path / "cache"), "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert "- Command: `python bench/students.py " in text and "- Date: " in text
    rows = next(iter(markdown_tables(text).values()))
    assert [row["student"] for row in rows] == ["teacher", "tiny sft", "tiny pl"]
    for row in rows[1:]:
        assert row["training pairs"] == "300" and row["vs teacher (test R-1)"].endswith("%")
        assert all(math.isfinite(float(x)) for x in row["test R-1 / R-2"].split(" / "))


def test_heads_bench_splits_a_summarys_time_and_times_each_shape_against_the_teacher(tmp_path, tiny_teacher_dir):
    out = tmp_path / "heads.md"
    done = subprocess.run([sys.executable, "bench/heads.py", "--teacher", str(tiny_teacher_dir), "--samples", "1",
                           "--repeats", "1", "--rounds-cap", "1", "--threads", "1", "--cache", str(tmp_path / "cache"),
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert "- Command: `python bench/heads.py " in text and "- Date: " in text
    rows = next(iter(markdown_tables(text).values()))
    assert [row["model"] for row in rows] == ["teacher (32 × 3)", "16 × 1", "16 × 1, shortlist", "16 × 2",
                                              "16 × 2, shortlist", "8 × 1, shortlist", "32 × 1", "32 × 2"]
    assert rows[0]["speed-up (IQR, rounds)"] == "1.00x" and all(row["speed-up (IQR, rounds)"].endswith(")")
                                                                for row in rows[1:])
    assert int(rows[2]["LM head rows"]) < int(rows[1]["LM head rows"]) == 30522


def test_heads_bench_times_students_with_a_shallower_encoder(tmp_path, tiny_teacher_dir):
    out = tmp_path / "heads.md"
    done = subprocess.run([sys.executable, "bench/heads.py", "--teacher", str(tiny_teacher_dir), "--samples", "1",
                           "--repeats", "1", "--rounds-cap", "1", "--threads", "1", "--cache", str(tmp_path / "cache"),
                           "--shapes", "/2x1s,/2x1se2", "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = next(iter(markdown_tables(out.read_text()).values()))
    assert [row["model"] for row in rows] == ["teacher (32 × 3)", "16 × 1, shortlist", "16 × 1, shortlist, encoder 2"]
    bad = subprocess.run([sys.executable, "bench/heads.py", "--shapes", "/2x1q"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode != 0 and "--shapes: '/2x1q' is not /FRACTIONxLAYERS[s][eENCODER]" in bad.stderr


def test_strategies_smoke_runs_both_strategies_side_by_side_under_one_budget(tmp_path):
    out, keep = tmp_path / "strategies.md", tmp_path / "records"
    done = subprocess.run([sys.executable, "bench/strategies.py", "--smoke", "--seeds", "0", "--keep", str(keep),
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert f"Command: `python bench/strategies.py --smoke --seeds 0 --keep {keep} --out {out}`" in text
    assert "torch threads 1" in text and "- Date: " in text
    records = {path.stem: json.loads(path.read_text()) for path in keep.glob("*.json")}
    assert set(records) == {"default-0", "random-0"}
    default, rand = records["default-0"], records["random-0"]
    assert default["threads"] == rand["threads"] == 1 and default["budget_s"] == rand["budget_s"] == 20
    # the default strategy tries the space's enqueued configuration first; random search draws from its start
    assert default["enqueued"] == 1 and default["trials"][0]["config"]["latent_dim"] == 16
    assert default["trials"][0]["config"]["learning_rate"] == 1.0e-3 and default["prescreen_ceiling"] == 1.1
    assert rand["enqueued"] == 0 and rand["prescreen_ceiling"] is None and rand["sampler"] == "random"
    for record in records.values():
        assert record["trials"], "no trial ran"
        assert all(t["start_s"] <= record["budget_s"] for t in record["trials"])  # none starts after the budget
        assert all(t["status"] in ("complete", "screened", "failed", "cut") for t in record["trials"])
    tables = markdown_tables(text)
    over_time = next(rows for title, rows in tables.items() if title.startswith("Hypervolume after t minutes"))
    per_seed = next(rows for title, rows in tables.items() if title.startswith("Per seed"))
    assert [row["strategy"] for row in over_time] == ["default", "random"]
    for row in over_time:
        values = [float(row[k]) for k in row if k.startswith("t=")]
        assert values == sorted(values) and all(v >= 0 for v in values)  # hypervolume never falls
        final = next(r for r in per_seed if r["strategy"] == row["strategy"])
        assert abs(float(final["hypervolume"]) - values[-1]) < 1e-4
    assert re.search(r"\*\*Reading:\*\* at 0\.333 minutes the default strategy's mean hypervolume is \d+\.\d\dx", text)
    # the table is re-made from the kept records alone
    again = tmp_path / "again.md"
    done = subprocess.run([sys.executable, "bench/strategies.py", "--report", *map(str, sorted(keep.glob("*.json"))),
                           "--out", str(again)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert markdown_tables(again.read_text())[next(t for t in tables if t.startswith("Per seed"))] == per_seed
    # re-scored with memory measured by the code that recorded it: the same memory, the same hypervolumes
    rescored = tmp_path / "rescored.md"
    done = subprocess.run([sys.executable, "bench/strategies_rescore.py", "--smoke", "--records", str(keep),
                           "--threads", "1", "--cache", str(tmp_path / "cache"), "--out", str(rescored),
                           "--keep", str(tmp_path / "rescored")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = markdown_tables(rescored.read_text())["Hypervolume at the budget, per seed"]
    assert [row["memory as measured"] for row in rows] == ["when recorded", "now"]
    for strategy in ("default", "random"):
        recorded = float(next(r for r in per_seed if r["strategy"] == strategy)["hypervolume"])
        assert rows[0][f"{strategy} (per seed)"] == rows[1][f"{strategy} (per seed)"]
        assert abs(float(rows[0][f"{strategy} (per seed)"]) - recorded) < 6e-4
    kept = {path.stem: json.loads(path.read_text()) for path in (tmp_path / "rescored" / keep.name).glob("*.json")}
    assert {name: len(r["trials"]) for name, r in kept.items()} == {n: len(r["trials"]) for n, r in records.items()}


def test_strategies_hypervolume_counts_only_trials_finished_by_then_above_the_floor():
    sys.path.insert(0, str(ROOT))
    from bench.strategies import hypervolume_at, points_by

    def trial(end, r1, ms, mb, status="complete"):
        return {"status": status, "end_s": end, "metrics": {"rouge1": r1, "latency_ms": ms, "train_peak_mb": mb}}

    record = {"objectives": {"rouge1": "max", "latency_ms": "min", "train_peak_mb": "min"},
              "reference": {"rouge1": 0.3, "latency_ms": 100.0, "train_peak_mb": 100.0}, "quality_floor": 0.5,
              "constraints": {},
              "trials": [trial(10, 0.3, 50, 50), trial(20, 0.1, 10, 10),  # the second under the floor (0.15)
                         trial(30, 0.3, 25, 50), {"status": "screened", "end_s": 5}]}
    assert points_by(record, 9) == []
    assert len(points_by(record, 10)) == 1 and len(points_by(record, 25)) == 1 and len(points_by(record, 30)) == 2
    assert hypervolume_at(record, 10) == 0.5 * 0.5
    assert abs(hypervolume_at(record, 30) - 0.75 * 0.5) < 1e-12  # 1 x (1 - 0.25) x (1 - 0.5)


def test_strategies_runs_together_are_scaled_by_their_own_teachers():
    sys.path.insert(0, str(ROOT))
    from bench.strategies import hypervolume_at, together_at

    objectives = {"rouge1": "max", "latency_ms": "min", "train_peak_mb": "min"}

    def run(teacher_ms, trials):
        return {"objectives": objectives, "quality_floor": 0.5, "constraints": {},
                "reference": {"rouge1": 0.3, "latency_ms": teacher_ms, "train_peak_mb": 100.0},
                "trials": [{"status": "complete", "end_s": end, "metrics": {"rouge1": r1, "latency_ms": ms,
                                                                           "train_peak_mb": mb}}
                           for end, r1, ms, mb in trials]}

    fast = run(200.0, [(10, 0.15, 50, 50)])  # R-1 0.5 of its teacher's, latency 0.25 of its teacher's
    good = run(100.0, [(10, 0.3, 50, 50), (99, 0.3, 10, 10)])  # the second finishes after t
    assert together_at([fast], 10) == hypervolume_at(fast, 10) == 0.5 * 0.75 * 0.5
    # 1 x 0.5 x 0.5 from `good`, plus the part of `fast`'s box outside it: 0.5 x (0.75 - 0.5) x 0.5
    assert abs(together_at([fast, good], 10) - (0.25 + 0.0625)) < 1e-12
    assert together_at([good, fast], 10) == together_at([fast, good], 10)


def test_strategies_surrogate_smoke_checks_itself_against_the_records_it_was_fitted_to(tmp_path):
    out = tmp_path / "surrogate.md"
    done = subprocess.run([sys.executable, "bench/strategies_surrogate.py", "--smoke", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert f"Command: `python bench/strategies_surrogate.py --smoke --out {out}`" in text and "- Date: " in text
    tables = markdown_tables(text)
    check = next(rows for title, rows in tables.items() if title.startswith("The surrogate against"))
    levers = next(rows for title, rows in tables.items() if title.startswith("Levers"))
    sys.path.insert(0, str(ROOT))
    from bench.strategies import hypervolume_at

    records = [json.loads(p.read_text()) for d in ("strategies_tpefix", "strategies_96x1")
               for p in sorted((ROOT / "bench" / d).glob("*.json"))]
    for row in check:  # the recorded column is the records' own hypervolume at the (3-minute) budget
        mean = sum(hypervolume_at(r, 180) for r in records if r["strategy"] == row["strategy"]) / 6
        assert row["recorded hypervolume at the budget (runs)"] == f"{mean:.3f} (6)"
    assert [row["strategy"] for row in levers] == ["random", "default", "gp"] and levers[0]["vs random"] == "1.00x"
    oracle = float(re.search(r"\*\*Oracle\*\* \(knows every configuration's predicted outcome, no noise\): "
                             r"(\d\.\d+)", text).group(1))
    assert oracle >= max(float(row["hypervolume"].split(" ± ")[0]) for row in levers) - 0.02


def test_strategies_surrogate_optimistic_gain_is_zero_only_for_a_draw_dominated_at_the_ceiling():
    sys.path.insert(0, str(ROOT))
    from bench.strategies_surrogate import CEILING, optimistic_gain

    trained = [{"rouge1": 0.9, "latency_ms": 0.3, "train_peak_mb": 0.5}]
    assert optimistic_gain(trained, 0.4, 0.6) > 0  # slower and heavier, but could score above 0.9
    assert optimistic_gain([{**trained[0], "rouge1": CEILING}], 0.4, 0.6) == 0  # no quality could lift it
    assert math.isclose(optimistic_gain([], 0.5, 0.5), CEILING * 0.5 * 0.5)

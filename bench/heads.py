"""What a decoder step costs at batch 1 on this machine, and what the output shortlist buys.

    python bench/heads.py --out bench/heads.md              # the embedded default (its space's decoding)
    python bench/heads.py --space summarization-hour --rounds-cap 30

For the space's teacher and untrained students of the shapes the hour space searches (random bottleneck: speed is
a property of the shapes), on its first validation pairs at fixed length (`evaluation.fixed_new_tokens`), batch 1:

1. Where a summary's time goes: the encoder alone, a one-token summary, a full-length one, and from these the
   cost of each further token (median of `--repeats` passes, models alternating). Beside it the LM head alone: one
   (1, width) × (width, rows) product, full vocabulary or shortlist.
2. Speed-ups against the teacher, each measured in interleaved rounds by `compare_speed` — the function every
   trial uses — until it is known within ± 5 % or `--rounds-cap` seconds.

Timings on a shared CPU are indicative; the speed-ups are ratios measured side by side.
"""

from __future__ import annotations

import argparse
import os
import platform as host
import re
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
import yaml

from shrinktune.data.vocabulary import training_token_ids
from shrinktune.measure.speed import compare_speed
from shrinktune.models.autoencoder import Autoencoder
from shrinktune.models.families import depth, encoder_module, family_of, half_configs
from shrinktune.models.generation import GenerationSettings, generate
from shrinktune.models.student import build_student, shortlist_output
from shrinktune.search import trial as T
from shrinktune.search.space import resolve_space_path
from shrinktune.settings import EvaluationSettings

SHAPES = [  # (decoder width ÷ the teacher's, decoder layers, shortlist, encoder layers or None = the teacher's)
    (2, 1, False, None), (2, 1, True, None), (2, 2, False, None), (2, 2, True, None), (4, 1, True, None),
    (1, 1, False, None), (1, 2, False, None),
]
SHAPE = re.compile(r"^/(?P<fraction>\d+)x(?P<layers>\d+)(?P<short>s?)(?:e(?P<encoder>\d+))?$")


def parse_shapes(text: str) -> list[tuple[int, int, bool, int | None]]:
    """`--shapes`: comma-separated `/FRACTIONxLAYERS[s][eENCODER]`, e.g. `/4x1s,/4x1se5` = a quarter of the
    teacher's width, one decoder layer, shortlisted, with the teacher's encoder or its first 5 layers."""
    shapes = []
    for item in text.split(","):
        match = SHAPE.match(item.strip())
        if match is None:
            raise SystemExit(f"--shapes: {item!r} is not /FRACTIONxLAYERS[s][eENCODER] (e.g. /4x1s or /4x1se5)")
        encoder = match["encoder"]
        shapes.append((int(match["fraction"]), int(match["layers"]), bool(match["short"]),
                       int(encoder) if encoder else None))
    return shapes


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="summarization-hour")
    parser.add_argument("--teacher", default=None, help="teacher folder (default: the space's)")
    parser.add_argument("--samples", type=int, default=3, help="validation pairs timed per pass")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds-cap", type=float, default=20.0, help="seconds of rounds per speed-up")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", default=os.environ.get("SHRINKTUNE_CACHE", str(Path.home() / ".cache/shrinktune")))
    parser.add_argument("--shapes", type=parse_shapes, default=SHAPES,
                        help="students to time: /FRACTIONxLAYERS[s][eENCODER], comma-separated (default: the hour "
                             "space's shapes)")
    parser.add_argument("--out", default=None)
    return parser.parse_args(argv)


def _ms(fn, batches) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        for batch in batches:
            fn(batch)
    return (time.perf_counter() - start) * 1000 / len(batches)


def _head_ms(head_rows: int, width: int, repeats: int = 200) -> float:
    weight, hidden = torch.randn(head_rows, width), torch.randn(1, width)
    for _ in range(20):
        torch.nn.functional.linear(hidden, weight)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.nn.functional.linear(hidden, weight)
    return (time.perf_counter() - start) * 1000 / repeats


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    torch.set_num_threads(args.threads)
    path = resolve_space_path(args.space)
    space = yaml.safe_load(path.read_text())
    generation = GenerationSettings(**(space.get("generation") or {}))
    ctx = T._prepared(T.TrialContext(task=space["task"], teacher_dir=args.teacher or space["teacher"],
                                     cache_root=args.cache, generation=generation,
                                     evaluation=EvaluationSettings(**(space.get("evaluation") or {}))))
    T.quiet_libraries()
    task, splits, teacher, tokenizer, _ = T._load_shared(ctx)
    teacher.eval()
    inputs, new_tokens = T._timing(teacher, tokenizer, task, ctx, splits["validation"][: args.samples])
    shortlist = training_token_ids(task, tokenizer, splits["train"])
    vocab = len(tokenizer)
    encoder_config, decoder_config = half_configs(teacher)
    width = getattr(encoder_config, family_of(encoder_config).width)
    models = {f"teacher ({width} × {depth(decoder_config, 'decoder')})": teacher}
    for fraction, layers, short, encoder_layers in args.shapes:
        latent = width // fraction
        if latent < width:
            torch.manual_seed(0)
            ae = Autoencoder(width, latent)
            student = build_student(teacher, latent_dim=latent, decoder_layers=layers, bottleneck=ae.encoder,
                                    bottleneck_spec=ae.spec, decoder_ffn="scaled", encoder_layers=encoder_layers)
        else:
            student = build_student(teacher, decoder_layers=layers, encoder_layers=encoder_layers)
        if short:
            student = shortlist_output(student, shortlist)
        generation.apply(student)
        name = f"{latent} × {layers}" + (", shortlist" if short else "")
        models[name + (f", encoder {encoder_layers}" if encoder_layers else "")] = student.eval()

    encoder_of = {name: encoder_module(m) if name.startswith("teacher") else m.get_encoder()
                  for name, m in models.items()}
    times: dict[str, dict[str, list[float]]] = {name: {"encoder": [], "one": [], "full": []} for name in models}
    for _ in range(args.repeats + 1):  # the first pass warms up and is dropped below
        for name, model in models.items():
            encoder = encoder_of[name]
            times[name]["encoder"].append(_ms(lambda b, e=encoder: e(input_ids=b["input_ids"],
                                                                      attention_mask=b["attention_mask"]), inputs))
            times[name]["one"].append(_ms(lambda b, m=model: generate(m, **b, max_new_tokens=1, min_new_tokens=1),
                                          inputs))
            times[name]["full"].append(_ms(lambda b, m=model: generate(m, **b, max_new_tokens=new_tokens,
                                                                         min_new_tokens=new_tokens), inputs))
    rows = []
    for name, model in models.items():
        med = {k: statistics.median(v[1:]) for k, v in times[name].items()}
        head = model.get_output_embeddings()
        row = {"name": name, **med, "per_token": (med["full"] - med["one"]) / max(1, new_tokens - 1),
               "head_rows": head.weight.shape[0], "head_ms": _head_ms(*head.weight.shape)}
        if model is not teacher:
            rounds = compare_speed(teacher, model, inputs, new_tokens=new_tokens, target=0.05,
                                   time_cap_s=args.rounds_cap)
            spread = rounds.speedup()
            row.update(speedup=spread.median, q25=spread.q25, q75=spread.q75, rounds=rounds.rounds,
                       converged=rounds.converged)
        rows.append(row)
        print(row, flush=True)

    lines = ["## Time per summary and speed-ups against the teacher", "",
             f"Fixed length {new_tokens} new tokens, batch 1, {len(inputs)} validation pairs per pass; vocabulary "
             f"{vocab}, shortlist {len(shortlist)} tokens.", "",
             "| model | encoder ms | 1-token summary ms | full summary ms | ms per further token | LM head rows | "
             "LM head alone ms | speed-up (IQR, rounds) |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        speed = "1.00x" if "speedup" not in row else (
            f"{row['speedup']:.2f}x ({row['q25']:.2f}-{row['q75']:.2f}, {row['rounds']}"
            f"{'' if row['converged'] else ', not converged'})")
        lines.append(f"| {row['name']} | {row['encoder']:.0f} | {row['one']:.0f} | {row['full']:.0f} | "
                     f"{row['per_token']:.1f} | {row['head_rows']} | {row['head_ms']:.2f} | {speed} |")
    print("\n".join(lines))
    if args.out:
        command = "python bench/heads.py " + " ".join(sys.argv[1:] if argv is None else argv)
        head_lines = ["# What a decoder step costs at batch 1", "", f"- Command: `{command}`",
                      f"- Machine: {host.machine()}, {os.cpu_count()} CPUs, torch threads {args.threads}, torch "
                      f"{torch.__version__}", f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
                      f"- Space: {path.name}", ""]
        Path(args.out).write_text("\n".join(head_lines + lines) + "\n")


if __name__ == "__main__":
    main()

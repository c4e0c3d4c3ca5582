"""How well a study keeps the machine busy.

Runs a study into a temporary folder and prints, from its own records:
  efficiency = sum of trial compute (seconds inside each trial, all its segments, x its threads)
               / (wall seconds x cores)
  overhead   = (wall x concurrent slots - sum of trial seconds) / trials: what scheduling costs per trial,
               Ray start-up, worker start-up and the waits at each round's rungs included.
Targets at the default budget: efficiency >= 0.95 and overhead <= 0.5 s per trial (smoke figures are dominated by
what a study pays once: Ray's start and each worker's first trial).

    python benchmarks/study_efficiency.py [--study residual-ablation] [--budget smoke]
    python benchmarks/study_efficiency.py --run RUN_DIR     # the same figures from a finished run's own records

With --run, the wall time is the run's own (launch to its last trial's end, summed over its sessions, as the
report gives it) and the trials are its registry's.

Then, from the trials' timelines (ablate.run_folder.timeline; a run folder written before them has none, and this
part is left out), where each trial's seconds go: the mean seconds per trial of each phase (handed out -> worker
entered, data, model, training steps, dev evaluations, the rest of training, files written), and the slot-seconds
no trial held: before the first trial was handed out (Ray's start), and between trials (slots idle while the planner
had nothing to hand out: a round's or the seed rule's barrier, the last trials of the study), per trial, and how
many of those came after the last moment every slot held a trial (the study's end: trials that do not share out
evenly over the slots leave slots free while the last ones run).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from ablate.data.splits import load_splits
from ablate.run_folder import phase_seconds, read_metrics, timeline_segments, trial_dir
from ablate.run_folder.registry import read_registry
from ablate.spec.study_spec import load_study
from ablate.engine.resources import Resources
from ablate.engine.study_runner import run_study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="residual-ablation")
    parser.add_argument("--budget", default="smoke")
    parser.add_argument("--cpus", type=int, default=os.cpu_count())
    parser.add_argument("--run", type=Path, help="a finished study run folder: its records, nothing is run")
    args = parser.parse_args()
    if args.run is not None:
        from ablate.analysis.load import load_run
        from ablate.analysis.runinfo import facts

        run = load_run(args.run)
        study = run.study
        resources = Resources(cpus=args.cpus, threads=study.base["threads"])
        summarise(study, resources, facts(run).wall_seconds, read_registry(args.run))
        timelines(args.run, read_registry(args.run), resources.concurrency(), facts(run).wall_seconds)
        return
    study = load_study(args.study, args.budget)
    resources = Resources(cpus=args.cpus, threads=study.base["threads"])
    base = study.arm_config(study.arms[0], **{k: v[0] for k, v in study.grid.items()})
    splits = load_splits(base.dataset, None, base.train_size, base.dev_size, base.test_size, seed=base.data_seed,
                         image_size=base.image_size)
    study.pin(dataset=splits.dataset)
    with tempfile.TemporaryDirectory(prefix="ablate-bench-") as tmp:
        run_dir = Path(tmp)
        (run_dir / "spec.yaml").write_text(study.resolved_yaml())
        t0 = time.perf_counter()
        run_study(study, run_dir, resources, None)
        wall = time.perf_counter() - t0
        rows = read_registry(run_dir)
        summarise(study, resources, wall, rows)
        timelines(run_dir, rows, resources.concurrency(), wall)


def summarise(study, resources: Resources, wall: float, rows: list[dict]) -> None:
    threads = study.base["threads"]
    # A repeated proposal shares its trial with the first one: count each trial's compute once.
    rows = list({(r["stage"], r["trial_id"]): r for r in rows}.values())
    seconds = [r["total_seconds"] or 0.0 for r in rows]
    slots = resources.concurrency()
    efficiency = sum(seconds) * threads / (wall * resources.cpus)
    overhead = (wall * slots - sum(seconds)) / len(rows)
    print(f"study {study.name} ({study.budget}): {len(rows)} trials, {slots} at a time x {threads} threads on {resources.cpus} CPUs")
    print(f"wall {wall:.1f} s, sum of trial seconds {sum(seconds):.1f} s (mean {sum(seconds) / len(rows):.1f} s)")
    print(f"efficiency: {efficiency:.3f} (target >= 0.95 at the default budget)")
    print(f"per-trial scheduling overhead: {overhead:.2f} s (Ray and worker start-up, the gaps between trials and the "
          "waits of rounds and the seed rule; target <= 0.5 s at the default budget)")



def timelines(run_dir: Path, rows: list[dict], slots: int, wall: float | None) -> None:
    """Where the trials' seconds went, from their timelines (nothing when the run recorded none)."""
    trials = {r["trial_id"]: r for r in rows}  # a repeated proposal shares its trial: once
    segments, lags, workers = [], [], {}
    for trial_id, row in trials.items():
        metrics = read_metrics(trial_dir(run_dir, trial_id))
        entries = timeline_segments(metrics)
        segments += entries
        if entries and row.get("registered_at") is not None:
            lags.append(row["registered_at"] - entries[-1]["written"])
        if entries and metrics.get("pid") is not None:  # the worker process of the trial's last segment
            workers.setdefault((metrics.get("host"), metrics["pid"]), []).append(entries[-1])
    if not segments:
        print("no timelines in this run's trials (written by an ablate before they were recorded)")
        return
    n = len(trials)
    totals: dict[str, float] = {}
    for entry in segments:
        for name, seconds in phase_seconds(entry).items():
            totals[name] = totals.get(name, 0.0) + seconds
    print(f"where a trial's seconds go ({n} trials, {len(segments)} segments; mean seconds per trial):")
    for name, what in (("dispatch", "handed out -> worker function entered"), ("data", "data splits loaded"),
                       ("model", "model built, splits on the device"), ("steps", "training steps"),
                       ("evaluations", "dev evaluations"), ("other", "test scoring, checkpoint, bookkeeping"),
                       ("files", "trial files written")):
        print(f"  {name:<12} {totals.get(name, 0.0) / n:7.3f}  ({what})")
    outside = sum(totals.get(k, 0.0) for k in ("dispatch", "data", "model", "other", "files"))
    print(f"  not training steps or evaluations, inside a trial's time on a worker: {outside / n:.3f} s per trial")
    if lags:
        print(f"  written -> registered: mean {sum(lags) / len(lags):.2f} s (a tuning trial waits for its round)")
    if workers:
        firsts = [min(w, key=lambda e: e["entered"]) for w in workers.values()]
        later = [e for w in workers.values() for e in w if all(e is not f for f in firsts)]
        mean = lambda entries, name: sum(phase_seconds(e)[name] for e in entries) / max(1, len(entries))  # noqa: E731
        print(f"  worker processes: {len(workers)} for {n} trials; model phase of a worker's first trial "
              f"{mean(firsts, 'model'):.2f} s (imports), of its later ones {mean(later, 'model'):.2f} s; "
              f"dispatch {mean(firsts, 'dispatch'):.2f} s and {mean(later, 'dispatch'):.2f} s")
        gaps = [b["entered"] - a["written"] for w in workers.values()
                for a, b in zip(*(lambda s: (s, s[1:]))(sorted(w, key=lambda e: e["entered"])))]
        if gaps:
            print(f"  between two trials on one worker (written -> next entered): mean {sum(gaps) / len(gaps):.2f} s, "
                  f"max {max(gaps):.2f} s")
    queued = [e["queued"] for e in segments if "queued" in e]
    if queued and wall:
        first, last = min(queued), max(e["written"] for e in segments)
        held = sum(e["written"] - e["queued"] for e in segments if "queued" in e)
        idle = (last - first) * slots - held
        print(f"  before the first trial was handed out and after the last was written (Ray start and stop): "
              f"{wall - (last - first):.1f} s")
        print(f"  slot-seconds no trial held between the first and the last trial: {idle:.1f} "
              f"({idle / n:.2f} s per trial: barriers, and the last trials running with slots free)")
        full, tail = end_tail([(e["queued"], e["written"]) for e in segments if "queued" in e], slots)
        print(f"    of which after the last moment all {slots} slots held a trial ({last - full:.1f} s before the "
              f"last trial's end): {tail:.1f} (the last trials running with slots free; the rest, "
              f"{idle - tail:.1f}, before it)")


def end_tail(spans: list[tuple[float, float]], slots: int) -> tuple[float, float]:
    """From (handed out, written) spans: the last moment every slot held a trial (the first hand-out when they
    never all did), and the slot-seconds no trial held from then to the last trial's end: the study's last trials
    running with slots free."""
    events = sorted([(q, 1) for q, _ in spans] + [(w, -1) for _, w in spans])  # at one instant, ends first
    held, full = 0, min(q for q, _ in spans)
    for t, change in events:
        if held >= slots and change < 0:
            full = t
        held += change
    last = max(w for _, w in spans)
    busy = sum(w - max(q, full) for q, w in spans if w > full)
    return full, (last - full) * slots - busy

if __name__ == "__main__":
    main()

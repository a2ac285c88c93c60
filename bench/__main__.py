"""Every benchmark, one table: figure, ours, baseline, ratio, goal, met.

    .venv/bin/python -m bench [--quick]        (or ./scripts/bench)

Runs, one after another (each starts and stops its own moto server and fal emulator):
bench/cold_start.py (each function's init as Lambda runs it), bench/store_copy.py (a 1 GiB output
copied into S3), bench/submit_batch.py (a 10-record batch against 10 sequential submits),
bench/batch_fanout.py (a 100,000-line JSONL manifest fanned out into job messages),
bench/webhook_overhead.py (a delivery against its own AWS calls) and bench/local_throughput.py
(jobs end to end through the local stack). ``--quick`` runs each at a smaller scale (fewer
rounds, 256 MiB, 10,000 lines, N = 50) to check that they work; its figures are noisier. Exits
non-zero when a figure misses its goal.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from bench import batch_fanout, cold_start, local_throughput, store_copy, submit_batch, webhook_overhead


@dataclass(frozen=True)
class Figure:
    name: str
    ours: str
    baseline: str
    ratio: float | None
    goal: str
    met: bool | None  # None: no goal, shown for what it says


@dataclass(frozen=True)
class Scale:
    cold_start_rounds: int = 15
    copy_mib: int = 1024
    copy_rounds: int = 2
    batch_repeat: int = 3
    manifest_lines: int = 100_000
    deliveries: int = 300
    jobs: tuple[int, ...] = (50, 200, 1000)
    workers: tuple[int, ...] = (1, 2)


QUICK = Scale(
    cold_start_rounds=5,
    copy_mib=256,
    copy_rounds=1,
    batch_repeat=1,
    manifest_lines=10_000,
    deliveries=60,
    jobs=(50,),
    workers=(1, 2),
)
COLD_START_GOAL = 1.3


def cold_start_figures(scale: Scale) -> list[Figure]:
    return cold_start_table(cold_start.run(scale.cold_start_rounds))


def cold_start_table(result: cold_start.ColdStartResult) -> list[Figure]:
    """Each function against the boto3 floor (the goal), then against the minimal handler on the
    same libraries (for what falflow's own code costs: no goal of its own)."""

    def against(name: str, baseline: str, label: str, *, judged: bool) -> Figure:
        ratio = result.ratio(name, baseline)
        return Figure(
            f"cold start ÷ {label}",
            f"{result.cpu[name] * 1000:.0f} ms",
            f"{result.cpu[baseline] * 1000:.0f} ms",
            ratio,
            f"≤ {COLD_START_GOAL}x" if judged else "—",
            ratio <= COLD_START_GOAL if judged else None,
        )

    floor, libraries = cold_start.FLOOR, cold_start.LIBRARIES
    return [
        *(
            against(reference, floor, f"boto3 floor: {reference} (reference)", judged=False)
            for reference in (cold_start.POWERTOOLS, libraries)
        ),
        *(against(name, floor, f"boto3 floor: {name}", judged=True) for name in result.functions),
        *(against(name, libraries, f"{libraries}: {name}", judged=False) for name in result.functions),
    ]


def copy_figures(scale: Scale) -> list[Figure]:
    result = store_copy.run(scale.copy_mib, rounds=scale.copy_rounds)
    size = f"{scale.copy_mib} MiB"
    return [
        Figure(
            f"copy {size} into S3 ÷ boto3 upload_fileobj",
            f"{result.ours.mib_per_s:.1f} MiB/s",
            f"{result.baseline.mib_per_s:.1f} MiB/s",
            result.throughput_ratio,
            "≥ 0.8x",
            result.throughput_ratio >= 0.8 and result.complete,
        ),
        Figure(
            f"copy {size}: peak RSS of a fresh process",
            f"{result.ours.peak_rss_mb:.0f} MB",
            f"{result.baseline.peak_rss_mb:.0f} MB",
            None,
            f"< {store_copy.MEMORY_LIMIT_MB} MB",
            result.within_memory_limit,
        ),
    ]


def batch_figures(scale: Scale) -> list[Figure]:
    result = submit_batch.run(repeat=scale.batch_repeat)
    return [
        Figure(
            f"{result.jobs}-record batch submit ÷ {result.jobs} sequential submits (speed-up)",
            f"{result.batch_s:.2f} s",
            f"{result.sequential_s:.2f} s",
            result.ratio,
            "≥ 4x",
            result.ratio >= 4 and result.all_submitted_once,
        )
    ]


def fan_out_figures(scale: Scale) -> list[Figure]:
    result = batch_fanout.run(scale.manifest_lines)
    ours, floor = result.ours, result.floor
    name = f"batch fan-out of a {ours.lines:,}-line manifest"
    return [
        Figure(
            f"{name}: lines/s ÷ a read-and-send floor",
            f"{ours.lines_per_s:,.0f} lines/s",
            f"{floor.lines_per_s:,.0f} lines/s",
            result.ratio,
            "≥ 0.5x (it reads the file twice)",
            result.ratio >= 0.5 and ours.sent_once and floor.sent_once,
        ),
        Figure(
            f"{name}: peak RSS of the fan-out process",
            f"{ours.peak_rss_mb:.0f} MB",
            f"{floor.peak_rss_mb:.0f} MB",
            None,
            f"< {batch_fanout.MEMORY_LIMIT_MB} MB",
            ours.peak_rss_mb < batch_fanout.MEMORY_LIMIT_MB,
        ),
        Figure(
            f"{name}: peak RSS ÷ a tenth of the lines' (it streams)",
            f"{ours.peak_rss_mb:.0f} MB",
            f"{result.ours_small.peak_rss_mb:.0f} MB",
            result.memory_growth,
            "≤ 1.25x",
            result.memory_growth <= 1.25,
        ),
        Figure(
            f"{name}: longest step (one invocation)",
            f"{ours.longest_step_s:.1f} s",
            "—",
            None,
            f"< {result.timeout_s:.0f} s (the submit's timeout)",
            ours.longest_step_s < result.timeout_s,
        ),
    ]


def webhook_figures(scale: Scale) -> list[Figure]:
    result = webhook_overhead.run(scale.deliveries)
    return [
        Figure(
            "webhook per delivery ÷ its own AWS calls",
            f"{result.handler.median_ms:.1f} ms",
            f"{result.floor.median_ms:.1f} ms",
            result.ratio,
            "≤ 1.3x",
            result.ratio <= 1.3 and result.recorded == result.deliveries,
        )
    ]


def throughput_figures(scale: Scale) -> list[Figure]:
    runs = local_throughput.run(scale.jobs, scale.workers)
    fewest = runs[0].workers
    by_jobs = {r.jobs: r for r in runs if r.workers == fewest}
    figures = []
    for r in runs:
        single = by_jobs[r.jobs]
        scaled = r.workers != fewest
        figures.append(
            Figure(
                f"local stack: {r.jobs} jobs end to end, {r.workers} worker(s) per function",
                f"{r.jobs_per_s:.2f} jobs/s",
                f"{single.jobs_per_s:.2f} jobs/s ({fewest} worker)" if scaled else "—",
                r.jobs_per_s / single.jobs_per_s if scaled else None,
                "all COMPLETED",
                r.all_completed,
            )
        )
    return figures


BENCHMARKS: tuple[Callable[[Scale], list[Figure]], ...] = (
    cold_start_figures,
    copy_figures,
    batch_figures,
    fan_out_figures,
    webhook_figures,
    throughput_figures,
)


def table(figures: list[Figure], title: str) -> Table:
    shown = Table(title=title)
    for column, justify in (
        ("figure", "left"),
        ("ours", "right"),
        ("baseline", "right"),
        ("ratio", "right"),
        ("goal", "left"),
        ("met", "left"),
    ):
        shown.add_column(column, justify=justify)  # type: ignore[arg-type]
    for f in figures:
        met = "—" if f.met is None else "[green]yes[/green]" if f.met else "[red]no[/red]"
        ratio = "—" if f.ratio is None else f"{f.ratio:.2f}x"
        shown.add_row(f.name, f.ours, f.baseline, ratio, f.goal, met)
    return shown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller runs: a check that every bench works")
    args = parser.parse_args(argv)
    scale = QUICK if args.quick else Scale()
    console = Console()
    figures: list[Figure] = []
    progress = Console(stderr=True)
    for benchmark in BENCHMARKS:
        name = benchmark.__name__.removesuffix("_figures").replace("_", " ")
        with progress.status(f"running {name} …"):
            measured = benchmark(scale)
        figures += measured
        for f in measured:  # as they come, so a long run shows where it is
            progress.log(f"{f.name}: {f.ours} vs {f.baseline}" + (f" ({f.ratio:.2f}x)" if f.ratio else ""))
    console.print(table(figures, "falflow benchmarks" + (" (--quick)" if args.quick else "")))
    return 0 if all(f.met is not False for f in figures) else 1


if __name__ == "__main__":
    raise SystemExit(main())

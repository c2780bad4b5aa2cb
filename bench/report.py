"""Assemble docs/performance.md (and docs/performance.png) from the benchmarks' reports in
bench/results/*.md (run it with `bench/run report`; `bench/run` with no arguments ends with it).

The document: a summary table (each goal, its figure, the same run's baseline, the ratio, MET or
NOT MET), the machine (CPU, cores, RAM, kernel, PostgreSQL, Redis and Python versions, load
average, how long each benchmark of the last full run took), a chart of webhook throughput and p99
against concurrency (webhook against baseline, from the ingest section), then one section per
benchmark: its bench/results/<name>.md, headings moved down one level.

Rules that keep what people wrote, so that regenerating never loses it:

1. A benchmark without a results file keeps its section from the current docs/performance.md (its
   own "- run:" line says when it ran); one in neither says how to run it.
2. A level-2 section of the current document whose heading this generator does not write is
   copied verbatim, placed after the section it followed before (at the end if that one is gone).
3. Inside a generated section (and above the first section), text between a line
   `<!-- notes -->` and a line `<!-- /notes -->` is copied verbatim to the end of the same section
   (matched by heading): the place for hand-written analysis of the figures.

Usage: python -m bench.report [--results DIR] [--output PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import os
import platform
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg
import redis

from bench.common import PG_ADMIN, RESULTS, ROOT, git_revision, log, markdown_table

DOC = ROOT / "docs" / "performance.md"
CHART_NAME = "performance.png"
RUN_TIMES = "run-times.txt"  # written by bench/run: `<name> <seconds> <exit status>` per line
NOTES_START, NOTES_END = "<!-- notes -->", "<!-- /notes -->"
NOT_RUN = "Not run yet"

# (results file stem, section heading, the command that writes it), in the document's order.
BENCHMARKS = [
    ("ingest", "Webhook ingest", "bench/run ingest"),
    ("ingest-tracing", "Tracer cost", "bench/run ingest --tracing both --concurrency 8"),
    ("normalize", "Normalize (one and two worker processes)", "bench/run normalize"),
    ("api", "API reads: /v1/me and a full /v1/sync", "bench/run api"),
    ("import", "Imports (one worker process)", "bench/run import"),
    ("console", "Operator console", "bench/run console"),
    ("e2e", "End-to-end: signed webhook to /v1/sync", "bench/run e2e"),
    ("soak", "Soak", "bench/run soak"),
]
SUMMARY, MACHINE = "Summary", "Machine"
GENERATED = {SUMMARY, MACHINE, *(heading for _, heading, _ in BENCHMARKS)}


# Reading markdown
# ------------------------------------------------------------------------------


def split_sections(text: str) -> tuple[str, list[tuple[str, str]]]:
    """(the text before the first `## `, [(heading, the section's text with its heading line)])."""
    preamble: list[str] = []
    sections: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("## "):
            sections.append((line[3:].strip(), [line]))
        elif sections:
            sections[-1][1].append(line)
        else:
            preamble.append(line)
    return "\n".join(preamble), [(heading, "\n".join(lines)) for heading, lines in sections]


def take_notes(text: str) -> tuple[str, list[str]]:
    """The text without its notes blocks, and the blocks (markers included)."""
    kept, notes, block = [], [], None
    for line in text.splitlines():
        if line.strip() == NOTES_START and block is None:
            block = [line]
        elif block is not None:
            block.append(line)
            if line.strip() == NOTES_END:
                notes.append("\n".join(block))
                block = None
        else:
            kept.append(line)
    if block is not None:  # an unclosed block is still someone's text: keep it
        notes.append("\n".join([*block, NOTES_END]))
    return "\n".join(kept), notes


def tables(text: str) -> list[list[dict[str, str]]]:
    """Every markdown table of the text, as rows keyed by the header's cells."""
    found: list[list[dict[str, str]]] = []
    header: list[str] | None = None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
            found.append([])
        elif not set("".join(cells)) <= set("-: "):
            found[-1].append(dict(zip(header, cells, strict=False)))
    return found


def table_with(text: str, *columns: str) -> list[dict[str, str]]:
    for rows in tables(text):
        if rows and all(column in rows[0] for column in columns):
            return rows
    raise LookupError(f"no table with {columns}")


@dataclass
class Goal:
    goal: str
    verdict: str  # MET, NOT MET, or what the line says
    detail: str


def goals(text: str) -> list[Goal]:
    """Each `goal...` line followed by a `-> VERDICT: detail` line."""
    lines = text.splitlines()
    found = []
    for line, answer in itertools.pairwise(lines):
        if line.startswith("goal") and answer.startswith("-> "):
            goal = re.sub(r"^goal[^:]*:\s*", "", line).strip()
            match = re.match(r"-> (NOT MET|MET|[^:]*)(?::\s*(.*))?$", answer)
            verdict, detail = (match.group(1), match.group(2) or "") if match else ("?", answer[3:])
            found.append(Goal(goal, verdict.strip(), detail.strip()))
    return found


# The summary
# ------------------------------------------------------------------------------


@dataclass
class Row:
    benchmark: str
    goal: str
    figure: str
    baseline: str
    ratio: str
    verdict: str


def _rows_by(rows: list[dict[str, str]], column: str) -> dict[str, dict[str, str]]:
    return {row[column]: row for row in rows}


def _pct(a: str, b: str) -> str:
    with contextlib.suppress(ValueError, ZeroDivisionError):
        return f"{100 * float(a.replace(',', '')) / float(b.replace(',', '')):.1f} %"
    return "-"


def summary_rows(name: str, text: str) -> list[Row]:
    """One row per goal of a section: the figure, the same run's baseline and the ratio where the
    section's tables give them (the goal line's own words otherwise)."""
    found = goals(text)
    rows = [Row(name, g.goal, g.detail, "-", "-", g.verdict) for g in found]
    with contextlib.suppress(LookupError, KeyError, IndexError, ValueError):
        if name == "ingest":
            at = _rows_by(table_with(text, "concurrency", "webhook req/s"), "concurrency")["8"]
            rows[0].figure = f"{at['webhook req/s']} webhooks/s, server p99 {at['server p99 ms']} ms (c = 8)"
            rows[0].baseline = f"{at['baseline ops/s']} ops/s (bare INSERT + publish)"
            rows[0].ratio = at["throughput ratio"]
        elif name == "normalize":
            # One goal per backlog, in the table's order: -c 1, -c 2, then the baseline.
            phases = table_with(text, "backlog", "phase", "events/s")
            for row, start in zip(rows, range(0, len(phases), 3), strict=False):
                one, two, base = phases[start : start + 3]
                row.goal = f"{row.goal} ({one['backlog']})"
                row.figure = (
                    f"{one['events/s']} events/s (-c 1), {two['events/s']} (-c 2), "
                    f"deadlocks {one['deadlocks']} and {two['deadlocks']}"
                )
                row.baseline = f"{base['events/s']} events/s (bare psycopg, 1 process)"
                row.ratio = _pct(one["events/s"], base["events/s"])
        elif name == "api":
            table = table_with(text, "what", "path", "p50 ms")
            for row, what in zip(rows, ("/v1/me (warm)", "full-year sync"), strict=False):
                api, base = [r for r in table if r["what"] == what][:2]
                row.figure = f"p50 {api['p50 ms']} ms"
                row.baseline = f"p50 {base['p50 ms']} ms (bare psycopg)"
                row.ratio = api["% of baseline"]
        elif name == "import":
            phases = table_with(text, "phase", "payloads/s")
            worker, base = phases[0], phases[1]
            rows.insert(
                0,
                Row(
                    name,
                    "import throughput (no goal; informational)",
                    f"{worker['payloads/s']} payloads/s",
                    f"{base['payloads/s']} payloads/s (bare psycopg + Celery)",
                    _pct(worker["payloads/s"], base["payloads/s"]),
                    "-",
                ),
            )
            memory = table_with(text, "file MiB", "VmHWM MiB")
            largest = max(memory, key=lambda r: float(r["VmHWM MiB"]))
            rows[1].figure = f"VmHWM {largest['VmHWM MiB']} MiB ({largest['file MiB']} MiB file)"
            rows[1].baseline = f"idle process {largest['idle VmRSS MiB']} MiB"
        elif name == "e2e":
            table = _rows_by(table_with(text, "from the scheduled send to", "p99 ms"), "from the scheduled send to")
            sync = table["typed row in /v1/sync (the CLI's view)"]
            sql = table["typed row in PostgreSQL (SQL poll; baseline)"]
            rows[0].figure = f"p99 {sync['p99 ms']} ms (p50 {sync['p50 ms']}), {sync['missing']} missing"
            rows[0].baseline = f"p99 {sql['p99 ms']} ms (typed row in PostgreSQL, SQL poll)"
            rows[0].ratio = f"x{float(sync['p99 ms']) / float(sql['p99 ms']):.2f} (sync / SQL)"
        elif name == "soak":
            books = re.search(r"(\d+) answered 200.*lost (\d+), duplicated typed rows (\d+)", rows[0].figure)
            if books:
                answered, lost, duplicated = books.groups()
                rows[0].figure = f"lost {lost}, duplicated typed rows {duplicated} ({answered} answered 200)"
            memory = table_with(text, "process", "growth MiB")
            worst = max(memory, key=lambda r: float(r["growth MiB"]))
            rows[1].figure = f"{worst['growth MiB']} MiB ({worst['growth']}), {worst['process']}"
            rows[1].baseline = f"first half {worst['first half MiB']} MiB"
    return rows


def summary(sections: dict[str, str]) -> list[str]:
    rows: list[Row] = []
    for name, heading, command in BENCHMARKS:
        text = sections.get(heading, "")
        found = summary_rows(name, text) if text else []
        not_run = not text or NOT_RUN in text
        rows += found or [Row(name, "-", f"not run (`{command}`)" if not_run else "no goal line", "-", "-", "-")]
    return markdown_table(
        ["benchmark", "goal", "figure", "same-run baseline", "ratio", "verdict"],
        [[r.benchmark, r.goal, r.figure, r.baseline, r.ratio, r.verdict] for r in rows],
    )


# The machine
# ------------------------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def _ram_gib() -> str:
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().splitlines()[0].split()[1])
        return f"{kib / 1024 / 1024:.1f} GiB"
    return "?"


def _postgres() -> str:
    with contextlib.suppress(psycopg.Error), psycopg.connect(**PG_ADMIN) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        return row[0] if row else "?"
    return "? (not reachable)"


def _redis() -> str:
    with contextlib.suppress(redis.RedisError):
        client = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=2)
        try:
            return str(client.info("server").get("redis_version", "?"))
        finally:
            client.close()
    return "? (not reachable)"


def run_times(results: Path) -> list[str]:
    path = results / RUN_TIMES
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            name, seconds, status = parts
            rows.append(
                [name, f"{int(seconds) // 60} min {int(seconds) % 60:02d} s", "ok" if status == "0" else status]
            )
    return markdown_table(["step", "took", "exit status"], rows) if rows else []


def machine(results: Path) -> list[str]:
    load = os.getloadavg()
    lines = [
        f"- CPU: {_cpu_model()}, {os.cpu_count()} cores; RAM {_ram_gib()}",
        f"- kernel: {platform.system()} {platform.release()}",
        f"- PostgreSQL {_postgres()}, Redis {_redis()}, Python {platform.python_version()}",
        (
            f"- report assembled {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC at commit {git_revision()}; load "
            f"average then {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (each section gives the load at the end of its run)"
        ),
    ]
    times = run_times(results)
    if times:
        lines += ["", "The last full `bench/run` (each step in turn, nothing else of ours running):", "", *times]
    return lines


# The chart
# ------------------------------------------------------------------------------


def chart(ingest: str, path: Path) -> bool:
    """Webhook throughput and p99 against concurrency, webhook against baseline; False without data."""
    try:
        rows = table_with(ingest, "concurrency", "webhook req/s", "baseline ops/s")
        points = sorted((int(r["concurrency"]), r) for r in rows)
    except (LookupError, ValueError):
        return False
    if not points:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(column: str) -> list[float]:
        return [float(r[column]) if r.get(column, "-") not in ("-", "") else float("nan") for _, r in points]

    levels = [c for c, _ in points]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(levels, series("webhook req/s"), "o-", color="C0", label="webhook (gunicorn, 2 workers)")
    left.plot(levels, series("baseline ops/s"), "s--", color="C1", label="baseline (bare INSERT + publish)")
    left.set_ylim(bottom=0)
    left.set_ylabel("operations per second")
    left.set_title("Throughput")
    right.plot(levels, series("p99 ms"), "o-", color="C0", label="webhook, client p99")
    if "server p99 ms" in points[0][1]:
        right.plot(levels, series("server p99 ms"), "^:", color="C0", label="webhook, server p99 (gunicorn)")
    right.plot(levels, series("baseline p99"), "s--", color="C1", label="baseline p99")
    right.set_ylabel("ms")
    right.set_yscale("log")
    right.set_title("p99 latency")
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.set_xticks(levels, [str(c) for c in levels])
        axis.set_xlabel("concurrency (client threads)")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle("POST /webhooks/terra against concurrency (bench/run ingest)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


# The document
# ------------------------------------------------------------------------------


def from_results(text: str, heading: str) -> str:
    """A results file as a section: its title replaced by `## heading`, other headings one level down."""
    lines = text.strip("\n").splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    body = [("#" + line) if re.match(r"#{1,5} ", line) else line for line in lines]
    return "\n".join([f"## {heading}", *body])


def with_notes(text: str, notes: list[str]) -> str:
    return text.rstrip("\n") + ("\n\n" + "\n\n".join(notes) if notes else "")


def assemble(old: str, results: Path, output: Path) -> str:
    old_preamble, old_sections = split_sections(old)
    old_by_heading = dict(old_sections)
    # Hand-written sections, anchored to the section they followed (rule 2).
    kept: dict[str | None, list[str]] = {}
    previous: str | None = None
    for heading, text in old_sections:
        if heading in GENERATED:
            previous = heading
        else:
            kept.setdefault(previous, []).append(text)

    sections: dict[str, str] = {}
    for name, heading, command in BENCHMARKS:
        notes = take_notes(old_by_heading.get(heading, ""))[1]
        path = results / f"{name}.md"
        if path.exists():
            body = from_results(path.read_text(), heading)
        elif heading in old_by_heading:
            body = take_notes(old_by_heading[heading])[0]
        else:
            body = f"## {heading}\n\n{NOT_RUN}: `{command}`."
        sections[heading] = with_notes(body, notes)

    chart_ok = chart(sections["Webhook ingest"], output.parent / CHART_NAME)
    intro = [
        "# Performance",
        "",
        (
            "Regenerated by `bench/run` (every benchmark in turn, then `bench/report.py`; about 15 minutes). "
            "Each benchmark measures against a bare baseline in the same run, so compare a figure with its own "
            "baseline, not with another run's: on a shared machine figures move by ±20 % between runs. "
            "`bench/run <name>` runs one benchmark and `bench/run report` rebuilds this page from "
            "bench/results/*.md; hand-written sections and notes survive (rules in bench/report.py)."
        ),
    ]
    preamble_notes = take_notes(old_preamble)[1]
    summary_section = [f"## {SUMMARY}", "", *summary(sections)]
    if chart_ok:
        summary_section += [
            "",
            f"![Webhook throughput and p99 against concurrency, webhook against baseline]({CHART_NAME})",
        ]
    parts = [
        "\n".join(intro),
        *preamble_notes,
        "\n".join(summary_section),
        "\n".join([f"## {MACHINE}", "", *machine(results)]),
    ]
    parts += kept.get(SUMMARY, []) + kept.get(MACHINE, []) + kept.get(None, [])
    for _, heading, _ in BENCHMARKS:
        parts.append(sections[heading])
        parts += kept.pop(heading, [])
    for heading, texts in kept.items():  # anchored to a section that is gone: at the end
        if heading not in (SUMMARY, MACHINE, None):
            parts += texts
    return "\n\n".join(part.strip("\n") for part in parts if part.strip()) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS, help="the benchmarks' reports (bench/results)")
    parser.add_argument("--output", type=Path, default=DOC, help="the page to write (docs/performance.md)")
    args = parser.parse_args(argv)
    old = args.output.read_text() if args.output.exists() else (DOC.read_text() if DOC.exists() else "")
    text = assemble(old, args.results, args.output)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    log(f"written to {args.output} (and {args.output.parent / CHART_NAME} when the ingest figures are there)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

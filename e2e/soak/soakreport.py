"""The soak's written result: a markdown table and a PNG of memory over time per component.

`make soak` points FLOTILLA_SOAK_REPORT at benchmarks/reliability, so the committed soak.md and
soak.png are exactly what the last 10-minute run measured; the short run in `make test` writes
nothing unless asked.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPRODUCE = "make soak   # = FLOTILLA_SOAK_S=600 FLOTILLA_SOAK_REPORT=benchmarks/reliability pytest e2e/soak"


@dataclass(frozen=True)
class Verdict:
    name: str
    trend: Any
    """memwatch.Trend"""
    bound_mib: float
    why: str

    @property
    def ok(self) -> bool:
        return bool(self.trend.growth_mib <= self.bound_mib)


def write_markdown(
    path: Path,
    *,
    soak_s: float,
    warmup_s: float,
    period_s: float,
    verdicts: Sequence[Verdict],
    extra_trends: Mapping[str, Any],
    fds: Mapping[str, tuple[int, int]],
    threads: Mapping[str, tuple[int, int]],
    load: Mapping[str, Any],
) -> None:
    rows = [
        "| component | RSS at window start (MiB) | at end (MiB) | max (MiB) | trend (MiB/h) "
        "| growth over window (MiB) | bound (MiB) | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v in verdicts:
        t = v.trend
        rows.append(
            f"| {v.name} | {t.start_mib:.1f} | {t.end_mib:.1f} | {t.max_mib:.1f} | {t.mib_per_hour:+.2f} "
            f"| {t.growth_mib:+.2f} | {v.bound_mib:.2f} | {'flat' if v.ok else 'GROWS'} |"
        )
    for name, t in extra_trends.items():
        rows.append(
            f"| {name} (not asserted) | {t.start_mib:.1f} | {t.end_mib:.1f} | {t.max_mib:.1f} "
            f"| {t.mib_per_hour:+.2f} | {t.growth_mib:+.2f} | - | - |"
        )
    fd_rows = ["| component | fds idle before load | fds idle after load | threads before | threads after |"]
    fd_rows.append("|---|---|---|---|---|")
    for name in fds:
        fd_rows.append(
            f"| {name} | {fds[name][0]} | {fds[name][1]} | {threads[name][0]} | {threads[name][1]} |"
        )
    text = f"""# Soak: router and operator memory under steady load

Measured {datetime.now(tz=UTC).strftime("%Y-%m-%d %H:%M UTC")} on {platform.node() or "this machine"}
({platform.processor() or platform.machine()}, shared with other work), by `e2e/soak/test_soak.py`.

Reproduce: `{REPRODUCE}`
(`make test` runs the same test for FLOTILLA_SOAK_S=90 s and writes nothing).

## Set-up

The demo's system (`flotilla.localcluster.demo` steps): local control plane with 4 KWOK nodes of
8 H100, the operator, the placement scheduler and the router as `flotilla <component> run`
processes, one `flotilla.enginesim` per fleet pod (H100 profile), the two example fleets
(5 replicas). Load: {load["duration_s"]:g} s of the Mooncake conversation trace replayed on its own
schedule through the router (streamed `/v1/completions`, prompts cut at {load["max_input"]} tokens,
outputs at {load["max_output"]}). Operator work beside it: a third fleet with no traffic scaled
between 1 and 2 replicas every {load["churn_period_s"]:g} s ({load["churns"]} scalings: pod
creates and deletes, placement, router discovery).

RSS, open fds and threads of each process are read from /proc every {period_s:g} s. The first
{warmup_s:g} s are warm-up (imports finish, caches and pools fill, allocator arenas are reserved);
the trend is a least-squares line through the {soak_s:g} s run's later samples.

## Result

Requests: {load["requests"]} sent, {load["ok"]} completed, {load["failed"]} failed
({load["rate"]:.2f} requests/s on average, {load["tokens"]} output tokens).

{chr(10).join(rows)}

{chr(10).join(fd_rows)}

Idle fds and threads are read before the load and again after it, once the churn fleet's last
scale is Ready and every connection the load opened has closed (pooled engine connections expire
after aiohttp's 30 s keep-alive timeout); they settled {load["fds_settled_s"]:.0f} s after that
check began. A leaked socket or thread would stay open.

Bounds (growth of the fitted line over the measured window):
{chr(10).join(f"- {v.name}: {v.why}" for v in verdicts)}

![RSS over time](soak.png)
"""
    path.write_text(text)


def write_plot(
    path: Path, series: Sequence[Any], warmup_s: float, trends: Mapping[str, Any], load_end_s: float
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    for s in series:
        t = [x.t_s for x in s.samples]
        rss = [x.rss_kib / 1024 for x in s.samples]
        (line,) = ax.plot(t, rss, label=f"{s.name} RSS", linewidth=1.2)
        if (tr := trends.get(s.name)) is not None:
            ax.plot(
                [warmup_s, warmup_s + tr.window_s],
                [tr.start_mib, tr.end_mib],
                linestyle="--",
                color=line.get_color(),
                label=f"{s.name} trend {tr.mib_per_hour:+.1f} MiB/h",
            )
    ax.axvspan(0, warmup_s, color="0.9", label="warm-up")
    ax.axvline(load_end_s, color="0.5", linewidth=0.8, linestyle=":", label="load ends")
    ax.set_xlabel("seconds since load start")
    ax.set_ylabel("RSS (MiB)")
    ax.set_ylim(bottom=0)
    ax.set_title("Soak: resident memory of the components under steady load")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

"""The run's table (every figure with its ratio to its ceiling) and its JSON file."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": memory_gb,
        "system": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg(),
    }


def git_commit() -> dict[str, Any]:
    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return result.stdout.strip()

    return {"commit": git("rev-parse", "HEAD") or None,
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


@dataclasses.dataclass
class Row:
    figure: str
    value: float | None
    unit: str
    ceiling: str = ""
    ratio: float | None = None
    target: str = ""
    met: bool | None = None


def ratio(value: float | None, ceiling: float | None) -> float | None:
    if value is None or not ceiling:
        return None
    return value / ceiling


def booking_rows(name: str, data: dict[str, Any], naive: dict[str, Any],
                 per: str = "booking") -> list[Row]:
    """A booking run's latency (p99 against the naive ceiling's) and CPU rows."""
    return [
        Row(f"  {name} p50", data["p50_ms"], "ms"),
        Row(f"  {name} p99", data["p99_ms"], "ms", "naive p99",
            ratio(data["p99_ms"], naive.get("p99_ms")), "< 100 ms", data["p99_ms"] < 100),
        *cpu_rows(data, naive, per),
    ]


def cpu_rows(data: dict[str, Any], naive: dict[str, Any], per: str = "booking") -> list[Row]:
    """CPU per booking (`per`: per purchase, for hold then confirm) of the server
    process and of PostgreSQL: the figures the shared machine's noise disturbs least."""
    out = []
    for key, label in (("server_cpu_ms_per_booking", "server"),
                       ("postgres_cpu_ms_per_booking", "PostgreSQL")):
        if data.get(key) is not None:
            out.append(Row(f"  {label} CPU per {per}", data[key], "ms",
                           "naive's" if data is not naive else "",
                           ratio(data[key], naive.get(key)) if data is not naive else None))
    return out


def rows(results: dict[str, Any]) -> list[Row]:
    ceil = results.get("ceilings", {})
    scen = results.get("scenarios", {})
    out: list[Row] = []
    http = ceil.get("http", {}).get("requests_per_s")
    naive = ceil.get("naive", {}).get("bookings_per_s")
    pgbench = ceil.get("pgbench", {}).get("bookings_per_s")
    if http:
        out.append(Row("ceiling: bare aiohttp JSON handler", http, "req/s"))
    if naive:
        out.append(Row("ceiling: bare handler + naive booking, 1 event", naive, "bookings/s",
                       "HTTP ceiling", ratio(naive, http)))
        out.append(Row("  its p99", ceil["naive"]["p99_ms"], "ms"))
        out.extend(cpu_rows(ceil["naive"], ceil["naive"]))
    if pgbench:
        out.append(Row("ceiling: pgbench naive booking, 1 event", pgbench, "bookings/s",
                       "naive ceiling", ratio(pgbench, naive)))
    floor = ceil.get("fanout_floor")
    if floor:
        out.append(Row("floor: INSERT..SELECT of the fan-out rows", floor["seconds"], "s"))

    flash = scen.get("flash_sale")
    spread = scen.get("spread", {}).get("bookings_per_s")
    if flash:
        rate = flash["bookings_per_s"]
        r = ratio(rate, naive)
        out.append(Row("flash sale, 1 event", rate, "bookings/s", "naive ceiling", r,
                       ">= 2x", None if r is None else r >= 2))
        if spread:
            r = ratio(rate, spread)
            out.append(Row("  flash sale vs spread", rate, "bookings/s", "spread", r,
                           ">= 0.8x", r >= 0.8 if r is not None else None))
        out.append(Row("  flash sale vs pgbench", rate, "bookings/s", "pgbench ceiling",
                       ratio(rate, pgbench)))
        out.append(Row("  flash sale vs HTTP", rate, "bookings/s", "HTTP ceiling",
                       ratio(rate, http)))
        out.extend(booking_rows("flash sale", flash, ceil.get("naive", {})))
    types = scen.get("flash_types")
    if types:
        rate = types["bookings_per_s"]
        r = ratio(rate, naive)
        out.append(Row("flash sale, 2 ticket types", rate, "bookings/s", "naive ceiling", r,
                       ">= 2x", None if r is None else r >= 2))
        out.append(Row("  2 types vs 1 (flash sale)", rate, "bookings/s", "flash sale",
                       ratio(rate, flash and flash["bookings_per_s"])))
        out.extend(booking_rows("2 types", types, ceil.get("naive", {})))
    checkout = scen.get("hold_confirm")
    if checkout:
        rate = checkout["bookings_per_s"]
        r = ratio(rate, naive)
        out.append(Row("hold then confirm, 1 event", rate, "purchases/s", "naive ceiling", r,
                       ">= 2x", None if r is None else r >= 2))
        out.append(Row("  hold+confirm vs flash sale", rate, "purchases/s", "flash sale",
                       ratio(rate, flash and flash["bookings_per_s"])))
        out.extend(booking_rows("hold+confirm, per request,", checkout,
                                ceil.get("naive", {}), "purchase"))
    expiry = scen.get("expiry")
    if expiry:
        back = expiry["back_s"]
        out.append(Row(f"expiry of {expiry['holds']:,} holds due at once: all tickets back",
                       back, "s", "", None, "< 2 s", back < 2))
        out.append(Row("  actor's first expiry after expires_at",
                       expiry["first_expired_s"], "s"))
        out.append(Row("  last expiry after expires_at", expiry["last_expired_s"], "s"))
    rush = scen.get("waitlist_rush")
    if rush:
        out.extend(waitlist_rows(rush, naive))
    if spread:
        data = scen["spread"]
        r = ratio(spread, naive)
        out.append(Row(f"spread, {data.get('events', 100)} events", spread, "bookings/s",
                       "naive ceiling", r, ">= 0.6x", None if r is None else r >= 0.6))
        out.append(Row("  spread vs HTTP", spread, "bookings/s", "HTTP ceiling",
                       ratio(spread, http)))
        out.extend(booking_rows("spread", data, ceil.get("naive", {})))

    out.extend(deployed_rows(scen))
    out.extend(processes_rows(results.get("by_processes", {})))

    lag = scen.get("confirmation_lag")
    if lag:
        out.append(Row(f"confirmation lag at {lag['rate']:.0f}/s, p50", lag["p50_ms"], "ms"))
        out.append(Row("  confirmation lag p99", lag["p99_ms"], "ms", "", None, "< 500 ms",
                       lag["p99_ms"] < 500 and lag["unconfirmed"] == 0))
    for key in ("webhooks", "webhooks_split"):
        hooks = scen.get(key)
        if hooks:
            out.extend(webhook_rows(hooks, lag))
    fan = scen.get("fan_out")
    if fan:
        for latency, run in fan["runs"].items():
            seconds = run["sent_s"]
            if latency == "0":
                out.append(Row(f"fan-out of {fan['attendees']}, mail 0 ms", seconds, "s",
                               "INSERT..SELECT floor",
                               ratio(seconds, floor and floor["seconds"]), "< 10 s",
                               seconds is not None and seconds < 10))
            else:
                out.append(Row(f"fan-out, mail {latency} ms", run["mails_per_s"], "mails/s",
                               "floor rows/s", ratio(run["mails_per_s"],
                                                     floor and floor["rows_per_s"]),
                               "> 5000/s", run["mails_per_s"] > 5000))
            rss = run["worker_peak_rss_mb"]
            out.append(Row(f"  worker peak RSS (mail {latency} ms)", rss, "MB", "", None,
                           "< 200 MB", rss is not None and rss < 200))
    floods = scen.get("floods")
    if floods:
        names = {
            "search_anonymous": "search flood, anonymous",
            "search_signed_in": "search flood, many accounts",
            "scrape_no_token": "/metrics flood, no token",
            "scrape_with_token": "/metrics flood, with token",
        }
        out.append(Row("bookings alone (floods scenario), p50", floods["alone_p50_ms"], "ms"))
        out.append(Row("  bookings alone, p99", floods["alone_p99_ms"], "ms"))
        for key, label in names.items():
            run = floods["runs"].get(key)
            if run is None:
                continue
            out.append(Row(f"bookings beside {label}, p50", run["p50_ms"], "ms",
                           "bookings alone", ratio(run["p50_ms"], floods["alone_p50_ms"])))
            out.append(Row("  p99", run["p99_ms"], "ms", "bookings alone",
                           ratio(run["p99_ms"], floods["alone_p99_ms"])))
            out.append(Row("  bookings/s", run["bookings_per_s"], "bookings/s",
                           "bookings alone", ratio(run["bookings_per_s"], sum(
                               floods["runs"][k]["bookings_per_s"]
                               for k in ("alone_before", "alone_after")) / 2)))
            flood = run["flood"]
            statuses = ", ".join(f"{n} x {s}" for s, n in sorted(flood["statuses"].items()))
            out.append(Row(f"  flood answered ({statuses})", flood["requests_per_s"], "req/s"))
    return out


SALES = (("flash", "flash_sale", "flash sale"), ("spread", "spread", "spread"))


def deployed_rows(scen: dict[str, Any], of: str = "") -> list[Row]:
    """The flash sale and spread as deployed (a worker confirming meanwhile) against the
    same load on the web process alone, and the confirmation lag during them."""
    out = []
    for name, key, label in SALES:
        run = scen.get(f"{name}_deployed")
        if not run:
            continue
        alone = scen.get(key)
        r = ratio(run["bookings_per_s"], alone and alone["bookings_per_s"])
        out += [
            Row(f"{label} as deployed (web + worker){of}", run["bookings_per_s"],
                "bookings/s", f"{label}, web only", r, ">= 0.8x",
                None if r is None else r >= 0.8),
            Row("  its p99", run["p99_ms"], "ms", "web only's",
                ratio(run["p99_ms"], alone and alone["p99_ms"])),
            Row("  confirmation lag p50, from the booking's transaction", run["lag_p50_ms"],
                "ms"),
            Row("  confirmation lag p99", run["lag_p99_ms"], "ms", "", None, "< 1000 ms",
                run["lag_p99_ms"] < 1000 and run["unconfirmed"] == 0),
            Row("  every booking confirmed, after the last answer", run["caught_up_s"], "s"),
            Row("  worker CPU per booking", run["worker_cpu_ms_per_booking"], "ms"),
            *cpu_against(run, alone, "web only's"),
        ]
    return out


def cpu_against(run: dict[str, Any], then: dict[str, Any] | None, label: str) -> list[Row]:
    """CPU per booking of the server processes and of PostgreSQL, against another run's."""
    return [Row(f"  {who} CPU per booking", run[key], "ms", label,
                ratio(run[key], then and then.get(key)))
            for key, who in (("server_cpu_ms_per_booking", "server"),
                             ("postgres_cpu_ms_per_booking", "PostgreSQL"))
            if run.get(key) is not None]


def processes_rows(by: dict[str, Any]) -> list[Row]:
    """The same sales with more server processes (serve --processes N) against the
    first count's (one, by default)."""
    if len(by) < 2:
        return []
    first, *others = by
    base = by[first]
    out = []
    for count in others:
        runs = by[count]
        of = f", {count} server processes"
        for name, key, label in SALES:
            for what, title in ((key, label), (f"{name}_deployed", f"{label} as deployed")):
                run = runs.get(what)
                if not run:
                    continue
                then = base.get(what)
                out.append(Row(f"{title}{of}", run["bookings_per_s"], "bookings/s",
                               f"{first} process", ratio(run["bookings_per_s"],
                                                         then and then["bookings_per_s"])))
                out.append(Row("  p99", run["p99_ms"], "ms", f"{first} process",
                               ratio(run["p99_ms"], then and then["p99_ms"])))
                if "lag_p99_ms" in run:
                    out.append(Row("  confirmation lag p99", run["lag_p99_ms"], "ms", "", None,
                                   "< 1000 ms",
                                   run["lag_p99_ms"] < 1000 and run["unconfirmed"] == 0))
                out.extend(cpu_against(run, then, f"{first} process"))
        if "flash_deployed" in runs or "spread_deployed" in runs:
            out.extend(deployed_rows(runs, of))
    return out


def webhook_rows(hooks: dict[str, Any], lag: dict[str, Any] | None) -> list[Row]:
    """The webhooks run: deliveries kept up with the bookings, and their lag, read
    against the confirmation lag of the lag scenario (the mail's path alone, from the
    201) and of the same bookings (beside the webhooks, from the change)."""
    confirmation = hooks["confirmation_p99_ms"]
    rows = [
        Row(f"webhooks at {hooks['rate']:.0f} bookings/s, "
            + ("own worker" if hooks.get("workers", 1) > 1 else "one worker") + ": delivered",
            hooks["delivered_per_s"],
            "deliveries/s", "bookings/s", ratio(hooks["delivered_per_s"],
                                                hooks["achieved_rate"])),
        Row("  webhook lag p50, from the change", hooks["p50_ms"], "ms"),
        Row("  webhook lag p95", hooks["p95_ms"], "ms"),
        Row("  webhook lag p99", hooks["p99_ms"], "ms", "same bookings' confirmation p99",
            ratio(hooks["p99_ms"], confirmation)),
        Row("  webhook lag max", hooks["max_ms"], "ms"),
        Row("  webhook lag p99, from the 201", hooks["p99_from_answer_ms"], "ms",
            "lag scenario's confirmation p99",
            ratio(hooks["p99_from_answer_ms"], lag and lag["p99_ms"])),
        Row("  confirmation lag p99, same bookings", confirmation, "ms"),
        Row("  workers' CPU per booking (confirmation and webhook)",
            hooks["worker_cpu_ms_per_booking"], "ms"),
        Row("  workers busy, in cores", hooks["worker_cpu_share"], ""),
        Row(f"  verified, of {hooks['bookings']:,} bookings", hooks["verified"], "webhooks",
            "bookings", ratio(hooks["verified"], hooks["bookings"]), "all",
            hooks["verified"] == hooks["bookings"]),
    ]
    return rows


def waitlist_rows(rush: dict[str, Any], naive: float | None) -> list[Row]:
    """The waiting-list rush: joins against sold-out booking attempts on the same event
    (and the naive ceiling's one booking per transaction), then offers on cancellation
    against cancellations nobody waits for."""
    rate, joins = rush["joins_per_s"], rush["joins"]
    quarters = rush["quarters_joins_per_s"]
    plain = rush["plain_cancellations"]["cancellations_per_s"]
    offering = rush["offering_cancellations"]["cancellations_per_s"]
    attempts = rush["sold_out_before"], rush["sold_out_after"]
    cpu = {key: [run[key] for run in (joins, *attempts)]
           for key in ("server_cpu_ms_per_request", "postgres_cpu_ms_per_request")}
    return [
        Row(f"waiting-list rush: {rush['waiting']:,} join 1 sold-out event", rate, "joins/s",
            "sold-out attempts/s", ratio(rate, rush["sold_out_per_s"])),
        Row("  ceiling: booking attempts, all 409 sold_out", rush["sold_out_per_s"],
            "attempts/s"),
        Row("  joins vs naive ceiling", rate, "joins/s", "naive ceiling", ratio(rate, naive)),
        Row("  joins p50", joins["p50_ms"], "ms"),
        Row("  joins p99", joins["p99_ms"], "ms", "sold-out p99",
            ratio(joins["p99_ms"], rush["sold_out_p99_ms"])),
        Row("  last quarter of the joins", quarters[-1], "joins/s", "first quarter",
            ratio(quarters[-1], quarters[0])),
        *[Row(f"  {label} CPU per join", values[0], "ms", "per sold-out attempt",
              ratio(values[0], (values[1] + values[2]) / 2))
          for label, values in (("server", cpu["server_cpu_ms_per_request"]),
                                ("PostgreSQL", cpu["postgres_cpu_ms_per_request"]))],
        Row(f"  entry with its position, last of {rush['waiting']:,}",
            rush["position_ms"]["last"], "ms", "first's",
            ratio(rush["position_ms"]["last"], rush["position_ms"]["first"])),
        Row(f"{rush['cancellations']:,} cancellations, each offered on", offering,
            "cancels/s", "nobody waiting", ratio(offering, plain)),
        Row("  cancellations with nobody waiting", plain, "cancels/s"),
    ]


def table(rows: list[Row]) -> str:
    def number(value: float | None) -> str:
        if value is None:
            return "-"
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"

    header = ("figure", "value", "unit", "ratio", "to", "target", "met")
    lines = [(r.figure, number(r.value), r.unit,
              "-" if r.ratio is None else f"{r.ratio:.2f}x", r.ceiling, r.target,
              "" if r.met is None else ("yes" if r.met else "NO")) for r in rows]
    widths = [max(len(str(c)) for c in column) for column in zip(header, *lines, strict=True)]
    out = []
    for n, line in enumerate([header, *lines]):
        out.append("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def write(results: dict[str, Any], directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"{stamp}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return path

"""The run's Markdown report: one results table, the targets beside what was measured,
ratios against the floor and each reference, and what every figure measured."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from run import Bench, Subject

MIB = 1024 * 1024
ADDED_TTFT_BUDGET_MS = 10.0


def _num(x: Any, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _pair(a: Any, b: Any, digits: int = 2) -> str:
    return f"{_num(a, digits)} / {_num(b, digits)}"


def _ratio(a: Any, b: Any) -> str:
    try:
        if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
            return "—"
    except TypeError:
        return "—"
    return f"{a / b:.2f}×"


def _mark(ok: bool | None) -> str:
    return {True: "met", False: "**not met**", None: "—"}[ok]


def sweep_passed(result: dict[str, Any]) -> bool:
    """A sweep level within the budget: no failure, no errors, added p99 under 10 ms."""
    return not (result.get("failed") or result.get("errors")) and \
        result.get("added_ttft_p99", math.inf) < ADDED_TTFT_BUDGET_MS


def sweep_best(subject: Subject) -> tuple[str, str]:
    """(highest concurrency with p99 added TTFT < 10 ms, turns/s there)."""
    sweep = subject.results.get("sweep")
    if not sweep:
        return subject.results.get("sweep_skipped", "—"), "—"
    best = None
    for level in sorted(sweep):
        r = sweep[level]
        if not sweep_passed(r):
            break
        best = (level, r)
    if best is None:
        first = min(sweep)
        return f"< {first} (added p99 {_num(sweep[first]['added_ttft_p99'], 1)} ms)", "—"
    level, r = best
    top = "≥ " if level == max(sweep) else ""
    return f"{top}{level}", _num(r.get("turns_per_s"), 1)


def _row(bench: Bench, subject: Subject) -> list[str]:
    r = subject.results
    if "overhead" in r:
        o = r["overhead"]
        overhead = [_pair(o["added_ttft_p50"], o["added_ttft_p99"]),
                    _pair(o["ttft_p50"], o["ttft_p99"])]
    else:
        runs = r.get("overhead_runs") or []
        o = runs[0] if runs else {}
        overhead = ["0 (baseline)", _pair(o.get("ttft_p50"), o.get("ttft_p99"))]
    load = r.get("load", {})
    floor = bench.subject(subject.floor) if subject.floor else None
    floor_tps = floor.results.get("load", {}).get("turns_per_s") if floor else None
    direct_tps = bench.direct.results.get("load", {}).get("turns_per_s")
    errors = load.get("errors", "—")
    if load.get("failed"):
        errors = f"failed: {load['failed'][:60]}"
    best_level, best_tps = sweep_best(subject) if subject.service else ("—", "—")
    cpu = load.get("gateway_cpu_ms_per_turn")
    redis_cpu = load.get("redis_cpu_ms_per_turn")
    cpu_text = _num(cpu) + (f" (+ redis {_num(redis_cpu)})" if redis_cpu is not None else "")
    peak = r.get("peak_rss")
    return [subject.label, *overhead,
            _num(load.get("turns_per_s"), 1),
            _ratio(load.get("turns_per_s"), floor_tps) if floor else "—",
            _ratio(load.get("turns_per_s"), direct_tps) if subject.service else "1.00×",
            _pair(load.get("ttft_p50"), load.get("ttft_p99"), 1),
            str(errors), cpu_text if subject.service else "—",
            f"{_num(load.get('load_core_busy', math.nan) * 100, 0)} %",
            best_level, best_tps,
            _num(peak / MIB, 0) if peak else "—"]


HEADER = ["subject", "added TTFT p50 / p99 @1 (ms)", "TTFT p50 / p99 @1 (ms)",
          "turns/s @200", "vs floor", "vs direct", "TTFT p50 / p99 @200 (ms)", "errors @200",
          "gateway CPU ms/turn @200", "load core busy @200",
          "max concurrency, added p99 TTFT < 10 ms", "turns/s there", "peak RSS (MiB)"]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |"
              for row in rows]
    return lines


def _targets(bench: Bench) -> list[list[str]]:
    rows: list[list[str]] = []
    for name, floor_name in (("chatgate-ws", "bare-ws"), ("chatgate-http", "bare-http")):
        subject = bench.subject(name)
        if subject is None:
            continue
        o, load = subject.results.get("overhead", {}), subject.results.get("load", {})
        floor = bench.subject(floor_name)
        floor_tps = floor.results.get("load", {}).get("turns_per_s") if floor else None
        tps = load.get("turns_per_s")
        share = tps / floor_tps if tps and floor_tps else None
        cpu = load.get("gateway_cpu_ms_per_turn")
        rows += [
            [f"{name}: added TTFT p50 @1", "≤ 1.5 ms", f"{_num(o.get('added_ttft_p50'))} ms",
             _mark(o.get("added_ttft_p50", math.inf) <= 1.5 if o else None)],
            [f"{name}: added TTFT p99 @1", "≤ 5 ms", f"{_num(o.get('added_ttft_p99'))} ms",
             _mark(o.get("added_ttft_p99", math.inf) <= 5 if o else None)],
            [f"{name}: turns/s @200 (20 deltas × 20 ms) vs {floor_name}", "≥ 90 %",
             f"{_num(share * 100 if share else None, 0)} % ({_num(tps, 1)} vs "
             f"{_num(floor_tps, 1)})", _mark(share >= 0.9 if share else None)],
            [f"{name}: TTFT p99 @200", "≤ 150 ms", f"{_num(load.get('ttft_p99'), 1)} ms",
             _mark(load["ttft_p99"] <= 150 if load.get("ttft_p99") is not None
                   and not math.isnan(load["ttft_p99"]) else None)],
            [f"{name}: gateway CPU per turn @200", "≤ 1.2 ms", f"{_num(cpu)} ms",
             _mark(cpu <= 1.2 if cpu is not None else None)]]
    idle = bench.extra.get("idle", {}).get("chatgate-ws", {})
    per = idle.get("bytes_per_connection")
    rows.append(["chatgate-ws: memory per idle WebSocket", "≤ 16 KiB",
                 f"{_num(per / 1024 if per is not None else None, 1)} KiB "
                 f"({idle.get('opened', '—')} sockets)",
                 _mark(per <= 16 * 1024 if per is not None else None)])
    soak = bench.extra.get("soak", {})
    growth = soak.get("growth_bytes")
    rows.append(["chatgate-ws: memory growth over the soak", "none (≤ 2 MiB, noise)",
                 f"{_num(growth / MIB if growth is not None else None)} MiB, slope "
                 f"{_num(soak.get('slope_bytes_per_min', math.nan) / MIB)} MiB/min "
                 f"over {_num(soak.get('duration_s'), 0)} s",
                 _mark(growth <= 2 * MIB if growth is not None else None)])
    return rows


def _peer_ratios(bench: Bench) -> list[list[str]]:
    rows = []
    peers = [s for s in bench.subjects if s.name.startswith(("litellm", "portkey"))]
    for mine, floor in (("chatgate-http", "bare-http"), ("chatgate-ws", "bare-ws")):
        me = bench.subject(mine)
        if me is None:
            continue
        for peer in [s for s in (bench.subject(floor),) if s] + peers:
            m, p = me.results, peer.results
            rows.append([
                f"{mine} vs {peer.name}",
                _ratio(m.get("load", {}).get("turns_per_s"), p.get("load", {}).get("turns_per_s")),
                _ratio(m.get("load", {}).get("gateway_cpu_ms_per_turn"),
                       p.get("load", {}).get("gateway_cpu_ms_per_turn")),
                f"{_num(m.get('overhead', {}).get('added_ttft_p50'))} vs "
                f"{_num(p.get('overhead', {}).get('added_ttft_p50'))}",
                _ratio(m.get("peak_rss"), p.get("peak_rss"))])
    return rows


def _sweep(bench: Bench) -> list[str]:
    """Per level: p99 added TTFT (ms) and turns/s, for every subject the sweep ran."""
    levels = sorted(bench.direct.results.get("sweep", {}))
    if not levels:
        return []
    rows = []
    direct = bench.direct.results["sweep"]
    rows.append(["direct: TTFT p99 (turns/s)",
                 *[f"{_num(direct[lv]['ttft_p99'], 1)} ({_num(direct[lv].get('turns_per_s'), 1)})"
                   for lv in levels]])
    for subject in bench.subjects:
        sweep = subject.results.get("sweep")
        if not sweep:
            continue
        cells = []
        for level in levels:
            r = sweep.get(level)
            if r is None:
                cells.append("(stopped)")
            else:
                errors = f", {r['errors']} errors" if r.get("errors") else ""
                first = r.get("first_attempt")
                retried = (f"; retried against direct p99 {_num(r.get('direct_ttft_p99'), 1)}"
                           f", first attempt {_num(first.get('added_ttft_p99'), 1)}"
                           if first else "")
                cells.append(f"{_num(r['added_ttft_p99'], 1)} ({_num(r.get('turns_per_s'), 1)}"
                             f"{errors}{retried})")
        rows.append([subject.name, *cells])
    return ["### Concurrency sweep: added TTFT p99 in ms (turns/s), 64 deltas × 20 ms", "",
            *_table(["subject", *[f"x{lv}" for lv in levels]], rows),
            "", "Each level's window holds at least "
            f"{bench.plan.sweep_min_turns} turns. A level over 10 ms (or with errors) is "
            "measured again, the direct path beside it; a subject stops at the first level "
            "over in both attempts (a retried cell shows the direct path's p99 it was "
            "measured against, and the first attempt). So a level passes if either attempt "
            "does: the best of two.", ""]


def _memory(bench: Bench) -> list[str]:
    lines = []
    for name, idle in bench.extra.get("idle", {}).items():
        if "error" in idle:
            lines.append(f"- idle WebSockets, {name}: failed: {idle['error']}")
            continue
        per = idle.get("bytes_per_connection")
        lines.append(
            f"- idle WebSockets, {name}: {idle['opened']} opened ({idle['failures']} failed, "
            f"{idle.get('alive_at_close')} still open at the end), gateway RSS "
            f"{_num(idle['rss_before'] / MIB, 1)} → {_num(idle['rss_after'] / MIB, 1)} MiB = "
            f"**{_num(per / 1024 if per is not None else None, 1)} KiB per socket**; "
            f"{_num(idle['rss_after_close'] / MIB, 1)} MiB after closing them")
    soak = bench.extra.get("soak")
    if soak:
        lines.append(
            f"- soak, chatgate-ws: {_num(soak['duration_s'], 0)} s at {_num(soak['rate'], 0)} "
            f"new turns/s (64 deltas × 20 ms), {soak['turns']} turns, {soak['errors']} errors, "
            f"TTFT p50 / p99 {_pair(soak['ttft_p50'], soak['ttft_p99'], 1)} ms; RSS "
            f"{_num(soak.get('rss_start', 0) / MIB, 1)} → {_num(soak.get('rss_end', 0) / MIB, 1)}"
            f" MiB (peak {_num(soak.get('rss_peak', 0) / MIB, 1)}), growth after warm-up "
            f"**{_num(soak.get('growth_bytes', math.nan) / MIB)} MiB**, slope "
            f"{_num(soak.get('slope_bytes_per_min', math.nan) / MIB)} MiB/min, gateway CPU "
            f"{_num(soak.get('gateway_cpu_ms_per_turn'))} ms/turn")
    cache = bench.extra.get("cache")
    if cache:
        if cache.get("not_available"):
            lines.append(f"- response-cache hits, chatgate-ws: {cache['not_available']}")
        else:
            lines.append(
                f"- response-cache hits, chatgate-ws: {cache['cached']} of {cache['turns']} "
                f"turns cached; TTFT p50 / p99 {_pair(cache['ttft_p50'], cache['ttft_p99'])} ms"
                f", added vs direct {_pair(cache['added_ttft_p50'], cache['added_ttft_p99'])} ms")
    return lines


def _errors(bench: Bench) -> list[str]:
    lines = []
    for subject in [bench.direct, *bench.subjects]:
        phases = [("@1", subject.results.get("overhead", {})),
                  ("@200", subject.results.get("load", {}))]
        phases += [(f"sweep @{k}", v) for k, v in subject.results.get("sweep", {}).items()]
        for phase, r in phases:
            if r.get("errors") or r.get("failed"):
                samples = "; ".join(r.get("error_samples") or []) or r.get("failed") or ""
                lines.append(f"- {subject.name} {phase}: {r.get('errors', '?')} errors: "
                             f"{samples[:300]}")
    soak = bench.extra.get("soak", {})
    if soak.get("errors"):
        lines.append(f"- chatgate-ws soak: {soak['errors']} errors: "
                     f"{'; '.join(soak.get('error_samples') or [])[:300]}")
    return lines


LEGEND = """\
What each figure measured:
- **added TTFT @1**: concurrency 1, "instant" upstream (16 deltas, no delays). Blocks of
  turns straight to the upstream and through the subject alternate in one load process;
  figure = subject's TTFT percentile minus the direct path's same percentile. TTFT = client
  send (HTTP POST or WS `chat` frame) → first non-empty content delta.
- **turns/s @200**: 200 concurrent clients in a closed loop, "chat20" upstream (20 deltas,
  20 ms apart, so at best 500 turns/s); completions per second in the window after the
  warm-up; every prompt unique. **vs floor**: against the bare aiohttp proxy of the same
  protocol; **vs direct**: against the same load straight to the upstream.
- **gateway CPU ms/turn @200**: user+system CPU of the gateway's process tree
  (/proc/PID/stat, all workers) over the whole load process, divided by completed turns
  (= CPU s per 1,000 turns). For chatgate, `+ redis` is its redis-server's CPU.
- **load core busy**: CPU of the load generator + mock upstream over the wall time; near
  100 % the load side, not the gateway, limits the figure.
- **max concurrency, added p99 TTFT < 10 ms**: concurrency sweep on the "chat" upstream
  (64 deltas × 20 ms); the highest level whose TTFT p99 minus the direct path's p99 at the
  same level stays under 10 ms (with no errors), and the turns/s measured there. A level
  over it is measured once more (direct path too) and counts as over only if over again.
- **peak RSS**: VmHWM summed over the gateway's process tree, after the load phases
  (before the idle-socket and soak phases).
- **idle WebSocket memory**: gateway RSS with N idle sockets (they only answer pings)
  minus before, divided by N. **Soak**: gateway RSS sampled while turns arrive at a fixed
  rate; growth = mean of the last tenth minus mean at 20–30 % of the run."""


def render(bench: Bench) -> str:
    meta = bench.meta
    plan = bench.plan
    cores = meta.get("cores")
    pin = (f"gateways (chatgate and its redis-server, the bare proxy, LiteLLM, Portkey) "
           f"pinned to core {meta['gateway_core']}, load generator and mock upstream to core "
           f"{meta['load_core']} (taskset)" if meta.get("gateway_core") is not None
           else "no pinning (one core)")
    elapsed = meta.get("elapsed_s", 0.0)
    foreign = meta.get("foreign_cpu_s", 0.0)
    versions = ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items())
    lines = [
        f"# chatgate benchmark: {plan.name} run, {meta.get('stamp')}",
        "",
        f"- Machine: {cores} cores; {pin}.",
        f"- Event loops: load generator and upstream on {meta.get('event_loop')}; chatgate "
        f"and the bare proxy on {meta.get('gateway_loop')}. Every process's open-files limit "
        f"{meta.get('fd_limit')}.",
        f"- Other processes on the machine used {foreign:.0f} CPU-seconds during the "
        f"{elapsed:.0f} s run ({100 * foreign / max(elapsed, 1):.0f} % of one core): the "
        f"higher, the noisier the figures.",
        f"- Versions: {versions}.",
        f"- Reproduce: `{meta.get('command')}`",
        "",
        "## Results",
        "",
        *_table(HEADER, [_row(bench, s) for s in [bench.direct, *bench.subjects]]),
        "",
    ]
    lines += _sweep(bench)
    lines += _memory(bench)
    lines += ["", "## chatgate against its targets", "",
              *_table(["figure", "target", "measured", ""], _targets(bench)), ""]
    ratios = _peer_ratios(bench)
    if ratios:
        lines += ["## Ratios against the floor and each reference", "",
                  *_table(["comparison", "turns/s @200", "gateway CPU per turn",
                           "added TTFT p50 @1 (ms)", "peak RSS"], ratios), ""]
    errors = _errors(bench)
    if errors:
        lines += ["## Errors seen", "", *errors, ""]
    lines += ["## References", ""]
    for subject in bench.subjects:
        if subject.service is not None and not subject.name.startswith("chatgate"):
            lines.append(f"- {subject.name}: ran ({subject.label})")
    for name, reason in bench.unavailable.items():
        lines.append(f"- {name}: **unavailable**: {reason}")
    lines += ["", LEGEND, ""]
    return "\n".join(lines)

"""Folding sweep: from the smallest to the fastest accelerator, each one synthesized.

``python -m fpga.sweep --config configs/lenet5.toml --device up5k [--points 8 | --quick]
[--out build/lenet5/synth]`` derives foldings with :func:`hw.folding.derive_folding` over
targets spread geometrically between the fastest reachable cycles per image and those of the
minimal folding, synthesizes each (:func:`fpga.synth.synthesize`), and writes
``<out>/sweep-<device>.json``, ``.md`` (the table) and ``.png``: cycles per image against
multipliers (with the MAC lower bound ``cycles ≥ MACs / multipliers``) and against LUTs, with
the Pareto front of the designs that fit marked.
"""

import io
import json
import math

from core.errors import UserError, cli
from core.provenance import BuildLock, write_bytes, write_json
from hw.cycles import cycle_model
from hw.folding import assign_multipliers, check_folding, check_load, derive_folding

from .cli import (
    ArgumentParser,
    add_model_arguments,
    load_argument,
    output_folder,
    positive,
    resolve_model,
)
from .devices import DEVICES
from .synth import clock_mhz, device_of, synthesize
from .tools import ToolError, require_tools, say

__all__ = ["fastest_target", "candidate_foldings", "pareto", "check_points", "check_min_cycles",
           "sweep", "plot_sweep", "main"]


def _try(meta, target, arrays):
    try:
        return derive_folding(meta, target, arrays)
    except ValueError:
        return None


def fastest_target(meta, arrays=None):
    """Return the smallest cycles per image any folding reaches (binary search)."""
    slowest = cycle_model(meta, None, arrays)["cycles_per_image"]
    lo, hi = 1, slowest
    while lo < hi:
        mid = (lo + hi) // 2
        if _try(meta, mid, arrays) is None:
            lo = mid + 1
        else:
            hi = mid
    return lo


def candidate_foldings(meta, arrays=None, points=8, samples=96, min_cycles=None):
    """Return up to ``points`` distinct foldings from the minimal to the fastest.

    Targets are spread geometrically between the fastest reachable cycles per image (or
    ``min_cycles``, if larger) and the minimal folding's; the distinct foldings
    :func:`derive_folding` gives for them are thinned to ``points`` spread evenly in
    log(cycles), always keeping both ends.
    """
    check_points(points)
    slowest = cycle_model(meta, None, arrays)["cycles_per_image"]
    fastest = max(fastest_target(meta, arrays), min(min_cycles or 0, slowest))
    found = {}
    for n in range(samples + 1):
        target = round(fastest * (slowest / fastest) ** (n / samples))
        folding = _try(meta, max(fastest, min(slowest, target)), arrays)
        if folding is None:
            continue
        key = json.dumps(folding)
        if key not in found:
            found[key] = (cycle_model(meta, folding, arrays)["cycles_per_image"], folding)
    minimal = check_folding(meta, None)
    found.setdefault(json.dumps(minimal), (slowest, minimal))
    ordered = sorted(found.values(), key=lambda cf: (-cf[0], json.dumps(cf[1])))
    # keep the cheapest folding for each cycle count
    by_cycles = {}
    for cycles, folding in ordered:
        cost = cycle_model(meta, folding, arrays)["multipliers"]
        if cycles not in by_cycles or cost < by_cycles[cycles][0]:
            by_cycles[cycles] = (cost, folding)
    ordered = [(c, by_cycles[c][1]) for c in sorted(by_cycles, reverse=True)]
    if len(ordered) <= points:
        return [f for _, f in ordered]
    logs = [math.log(c) for c, _ in ordered]
    chosen = []
    for i in range(points):
        want = logs[0] + (logs[-1] - logs[0]) * i / (points - 1)
        best = min((j for j in range(len(ordered)) if j not in chosen),
                   key=lambda j: abs(logs[j] - want))
        chosen.append(best)
    return [ordered[j][1] for j in sorted(set(chosen))]


def pareto(rows, x="luts", y="cycles_per_image"):
    """Mark ``row["pareto_<x>"]``: no other fitting row is at least as good in both, better in
    one."""
    fit = [r for r in rows if r["fits"]]
    for r in rows:
        r[f"pareto_{x}"] = bool(r["fits"]) and not any(
            o is not r and o[x] <= r[x] and o[y] <= r[y] and (o[x] < r[x] or o[y] < r[y])
            for o in fit)
    return rows


_COLUMNS = ("cycles_per_image", "multipliers", "luts", "ffs", "dsps", "brams", "spram",
            "fmax_mhz", "images_per_second", "fits")


def _row(n, folding, result):
    row = {k: result.get(k) for k in _COLUMNS}
    row.update(point=n, folding=folding, macs=result["macs"],
               mac_bound_cycles=result["mac_bound_cycles"],
               overused=result.get("overused", []) or
               ([f"error: {result['error']}"] if result.get("error") else []),
               seconds=result["seconds"]["total"])
    return row


def check_min_cycles(meta, arrays, min_cycles):
    """Return ``min_cycles`` (None stays None) when it is a positive integer no larger than the
    minimal folding's cycles per image; else raise :class:`UserError`."""
    if min_cycles is None:
        return None
    positive("--min-cycles", min_cycles, integer=True,
             default="the fastest folding any layer allows")
    slowest = cycle_model(meta, None, arrays)["cycles_per_image"]
    if min_cycles > slowest:
        raise UserError(f"--min-cycles={min_cycles} exceeds the {slowest:,} cycles per image of "
                        f"the minimal folding, the slowest design: give at most {slowest}")
    return int(min_cycles)


def check_points(points):
    """Return ``points`` when it is an integer of at least 2 (both ends of the sweep)."""
    if not isinstance(points, int) or isinstance(points, bool) or points < 2:
        raise UserError(f"--points={points!r} must be an integer of at least 2 (the minimal "
                        f"and the fastest folding); leave it out for 8, or give --quick for 3")
    return points


def sweep(meta, arrays, device, out_dir, *, points=8, freq_mhz=None, load=(), progress=say,
          min_cycles=None, resume=False):
    """Synthesize the foldings of :func:`candidate_foldings`; write and return the table.

    Each folding's multipliers beyond the device's DSP blocks are built from LUTs
    (:func:`hw.folding.assign_multipliers`). Every argument is checked before anything is
    written; the output folder's :class:`~core.provenance.BuildLock` is held while the sweep
    runs and its table, Markdown and plot are written atomically. With ``resume``, a point
    whose folder holds a result recorded for the same inputs (design, device, options, tools:
    :func:`fpga.synth.synthesis_record`) is kept; file dates are never consulted.
    """
    dev = device_of(device)
    points = check_points(points)
    load = check_load(meta, load)
    clock_mhz(freq_mhz, dev)
    min_cycles = check_min_cycles(meta, arrays, min_cycles)
    out = output_folder(out_dir)
    require_tools("yosys", dev.family)
    foldings = [assign_multipliers(f, dev.capacity["dsps"])
                for f in candidate_foldings(meta, arrays, points, min_cycles=min_cycles)]
    with BuildLock(out, "sweep"):
        rows = []
        for n, folding in enumerate(foldings):
            progress(f"[sweep {dev.name}] point {n + 1}/{len(foldings)}")
            work = out / f"sweep-{dev.name}" / f"p{n}"
            try:
                result = synthesize(meta, arrays, folding, dev, work, freq_mhz=freq_mhz,
                                    progress=progress, load=load, reuse=resume,
                                    tag=f"sweep {dev.name} {n + 1}/{len(foldings)}")
            except ToolError as exc:
                # One point's tool failure is a row of the table, not the end of the sweep.
                progress(f"[sweep {dev.name}] point {n + 1}: {exc}")
                model = cycle_model(meta, folding, arrays)
                result = {"cycles_per_image": model["cycles_per_image"],
                          "multipliers": model["multipliers"], "fits": False,
                          "macs": model["macs"],
                          "mac_bound_cycles": -(-model["macs"] // model["multipliers"]),
                          "error": str(exc), "seconds": {"total": None}}
            rows.append(_row(n, folding, result))
        pareto(rows, "luts")
        pareto(rows, "multipliers")
        table = {"device": dev.name, "device_label": dev.label, "capacity": dev.capacity,
                 "load": list(load),
                 "macs": rows[0]["macs"] if rows else None, "rows": rows}
        json_path = out / f"sweep-{dev.name}.json"
        plot_sweep(table, out / f"sweep-{dev.name}.png")
        _write_markdown(table, out / f"sweep-{dev.name}.md")
        write_json(json_path, table)
    progress(f"[sweep {dev.name}] {json_path}")
    return table


def _write_markdown(table, path):
    def f(v):
        if v is None:
            return "—"
        if isinstance(v, bool):
            return "yes" if v else "no"
        return f"{v:,.1f}" if isinstance(v, float) else f"{v:,}"
    lines = [f"# Folding sweep: {table['device_label'] or table['device']}", "",
             f"{table['macs']:,} MACs per image; MAC bound: cycles ≥ MACs / multipliers. "
             f"Pareto (LUTs, cycles) marked ★.", "",
             "| # | cycles/image | MAC bound | multipliers | LUTs | FFs | DSPs | BRAMs | SPRAM | "
             "Fmax MHz | images/s | fits | folding (pe×simd, L: LUT multipliers) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in table["rows"]:
        fold = " ".join(f"{e['pe']}×{e['simd']}{'L' if e.get('mul') == 'lut' else ''}"
                        for e in r["folding"])
        fits = f(r["fits"]) if r["fits"] else "no: " + "; ".join(r["overused"]) if \
            r["overused"] else f(r["fits"])
        star = " ★" if r.get("pareto_luts") else ""
        lines.append(f"| {r['point']}{star} | {f(r['cycles_per_image'])} | "
                     f"{f(r['mac_bound_cycles'])} | {f(r['multipliers'])} | {f(r['luts'])} | "
                     f"{f(r['ffs'])} | {f(r['dsps'])} | {f(r['brams'])} | {f(r['spram'])} | "
                     f"{f(r['fmax_mhz'])} | {f(r['images_per_second'])} | {fits} | {fold} |")
    write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))
    return path


def plot_sweep(table, path):
    """Plot cycles per image against multipliers (with the MAC bound) and against LUTs."""
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = table["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, x, label in ((axes[0], "multipliers", "multipliers (PE × SIMD)"),
                         (axes[1], "luts", "LUTs (logic cells on iCE40)")):
        fit = [r for r in rows if r["fits"]]
        over = [r for r in rows if not r["fits"] and r[x] is not None]   # not a tool failure
        ax.scatter([r[x] for r in fit], [r["cycles_per_image"] for r in fit], color="tab:blue",
                   label="fits", zorder=3)
        if over:
            ax.scatter([r[x] for r in over], [r["cycles_per_image"] for r in over],
                       marker="x", color="tab:red", label="does not fit", zorder=3)
        front = sorted((r for r in rows if r.get(f"pareto_{x}")), key=lambda r: r[x])
        if front:
            ax.plot([r[x] for r in front], [r["cycles_per_image"] for r in front], "-",
                    color="tab:green", label="Pareto front", zorder=2)
        if x == "multipliers" and table["macs"]:
            xs = sorted({r[x] for r in rows if r[x]})
            if xs:
                lo, hi = xs[0], xs[-1]
                grid = [lo * (hi / lo) ** (i / 50) for i in range(51)] if hi > lo else [lo]
                ax.plot(grid, [table["macs"] / m for m in grid], "--", color="gray",
                        label="MAC bound (MACs / multipliers)")
        cap = table["capacity"].get(x if x == "luts" else "dsps")
        if x == "luts" and cap:
            ax.axvline(cap, color="tab:red", linestyle=":", label=f"device: {cap:,} LUTs")
        if any(r[x] for r in rows):     # not when every point failed in its tools
            ax.set_xscale("log")
            ax.set_yscale("log")
            # Plain numbers at 1, 2 and 5 times powers of ten (log minor labels overlap).
            ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(
                matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(label)
        ax.set_ylabel("cycles per image")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Folding sweep on {table['device_label'] or table['device']}")
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, dpi=110, format="png")
    plt.close(fig)
    write_bytes(path, image.getvalue())
    return path


@cli
def main(argv=None):
    parser = ArgumentParser(prog="python -m fpga.sweep",
                            description="Synthesize foldings from smallest to fastest.")
    add_model_arguments(parser, device=True)
    parser.add_argument("--points", type=int, default=None, help="foldings to synthesize (8)")
    parser.add_argument("--quick", action="store_true", help="3 points")
    parser.add_argument("--resume", action="store_true",
                        help="keep the results of points recorded for the same inputs")
    parser.add_argument("--min-cycles", type=int,
                        help="fastest folding to try, in cycles per image (default: the "
                             "fastest any folding reaches)")
    args = parser.parse_args(argv)
    if args.folding or args.target_cycles:
        raise UserError("the sweep derives its foldings; drop --folding/--target-cycles")
    if args.quick and args.points is not None:
        raise UserError("give --points or --quick (3 points), not both")
    points = check_points(3 if args.quick else 8 if args.points is None else args.points)
    clock_mhz(args.freq, DEVICES[args.device])
    out = output_folder(args.out) if args.out else None
    if args.min_cycles is not None:
        positive("--min-cycles", args.min_cycles, integer=True,
                 default="the fastest folding any layer allows")
    meta, arrays, _, _, preset_dir = resolve_model(args, args.device)
    load = load_argument(args, meta)
    out = out if out is not None else output_folder(preset_dir / "synth")
    sweep(meta, arrays, args.device, out, points=points, freq_mhz=args.freq, load=load,
          min_cycles=args.min_cycles, resume=args.resume)
    for ext in ("json", "md", "png"):
        print(out / f"sweep-{args.device}.{ext}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

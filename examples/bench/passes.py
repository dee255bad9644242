"""The table of a pass-alternating benchmark run (redis.sh, archive.sh).

Reads OUT/LOAD.CONFIG.PASS.json reports and prints, for each row, the
median of each configuration over the passes with its range, and for each
ratio the median of the per-pass ratios (the configurations of one pass ran
back to back, so their ratio cancels out most of what the machine's other
work does to them) with its range; then every pass's values.

    passes.py OUT RESULTS --passes N --column NAME=LABEL... \
        --ratio NUM/DEN... --row LOAD:KEY:LABEL...

KEY `efficiency` is deliveries per second of server CPU
(deliveries_per_s / server_cpu_pct * 100).
"""

import argparse
import json
import os
import statistics


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("results")
    p.add_argument("--passes", type=int, required=True)
    p.add_argument("--column", action="append", default=[])
    p.add_argument("--ratio", action="append", default=[])
    p.add_argument("--row", action="append", default=[])
    a = p.parse_args()
    columns = [c.split("=", 1) for c in a.column]
    labels = dict(columns)
    ratios = [r.split("/", 1) for r in a.ratio]
    rows = [r.split(":", 2) for r in a.row]
    passes = range(1, a.passes + 1)

    def value(load, config, n, key):
        try:
            report = json.load(open(os.path.join(a.out, f"{load}.{config}.{n}.json")))
        except (OSError, ValueError):
            return None
        if key == "efficiency":
            d, cpu = report.get("deliveries_per_s"), report.get("server_cpu_pct")
            return d / cpu * 100 if d is not None and cpu else None
        v = report.get(key)
        return v if isinstance(v, (int, float)) else None

    def series(load, config, key):
        return [value(load, config, n, key) for n in passes]

    def per_pass_ratios(load, key, num, den):
        return [x / y if x is not None and y else None
                for x, y in zip(series(load, num, key), series(load, den, key))]

    def fmt(v):
        if v is None:
            return "-"
        if isinstance(v, int) or abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:,.1f}" if abs(v) >= 10 else f"{v:,.2f}"

    def summary(vals, unit=""):
        vals = [v for v in vals if v is not None]
        if not vals:
            return "-"
        med = statistics.median(vals)
        show = (lambda v: f"{v:.2f}{unit}") if unit else fmt
        if len(vals) == 1:
            return show(med)
        return f"{show(med)} ({show(min(vals))}-{show(max(vals))})"

    width = max([len(label) for _, _, label in rows] + [20]) + 2
    head = [labels[c] for c, _ in columns] + [f"{labels[n]} / {labels[d]}" for n, d in ratios]
    print(f"medians of {a.passes} alternating passes (min-max over the passes); "
          "ratios: median of the per-pass ratios")
    table = [["load"] + head]
    for load, key, label in rows:
        table.append([label] + [summary(series(load, c, key)) for c, _ in columns]
                     + [summary(per_pass_ratios(load, key, n, d), "x") for n, d in ratios])
    show(table)
    print()
    print("each pass")
    table = [["load", "pass"] + head]
    for n in passes:
        for load, key, label in rows:
            table.append([label, str(n)] + [fmt(value(load, c, n, key)) for c, _ in columns]
                         + [fmt_ratio(per_pass_ratios(load, key, num, den)[n - 1])
                            for num, den in ratios])
    show(table)
    print(f"(raw results in {a.results})")


def show(table):
    """Prints rows of cells: the first column left-aligned, the rest right."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        print("  ".join(cells).rstrip())


def fmt_ratio(r):
    return "-" if r is None else f"{r:.2f}x"


if __name__ == "__main__":
    main()

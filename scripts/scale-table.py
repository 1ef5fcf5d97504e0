#!/usr/bin/env python3
"""The BENCHMARKS.md table of `lore bench scale` reports: one column per report, in
the order given (named by file).

    python3 scripts/scale-table.py benches/scale-*.json
"""
import json
import sys

MIB = 1 << 20


def case(r, mode, filtered):
    for c in r["index"]["report"]["searches"]:
        if c["mode"] == mode and c["filtered"] == filtered:
            return c["latency"]
    return None


def main(paths):
    runs = [json.load(open(p)) for p in paths]  # in the order given
    rows = []

    def row(name, f):
        rows.append(f"| {name} | " + " | ".join(f(r) for r in runs) + " |")

    imp = lambda r: r["import"]["report"][0]
    idx = lambda r: r["index"]["report"]
    row("chunks (documents)", lambda r: f"{r['chunks']:,} ({r['rows']['documents']:,})")
    row("import, wall (chunks/s)", lambda r: f"{r['import']['seconds']:.0f} s ({imp(r)['chunks_written'] / r['import']['seconds']:.0f}/s)")
    row("… of which graph build", lambda r: f"{imp(r)['stores']['graph']:.0f} s")
    row("… of which sled / tantivy", lambda r: f"{imp(r)['stores']['docs']:.0f} s / {imp(r)['stores']['keywords']:.0f} s")
    row("import peak RSS", lambda r: f"{r['import']['peak_rss_bytes'] / MIB:,.0f} MiB")
    row("open", lambda r: f"{idx(r)['open_ms'] / 1000:.1f} s")
    row("RSS at rest (after open)", lambda r: f"{idx(r)['rss_open_bytes'] / MIB:,.0f} MiB")
    row("peak RSS under search", lambda r: f"{idx(r)['rss_peak_bytes'] / MIB:,.0f} MiB")
    row("disk", lambda r: f"{idx(r)['disk_bytes'] / MIB:,.0f} MiB")
    by = lambda r, s: idx(r).get("disk_by_store", {}).get(s)
    row("… sled / tantivy / vectors", lambda r: " / ".join(
        "?" if by(r, s) is None else f"{by(r, s) / MIB:,.0f}" for s in ["docs", "keywords", "vectors"]) + " MiB")
    for mode in ["hybrid", "dense", "bm25"]:
        for filtered in [False, True]:
            name = f"{mode}{' + filter (10 %)' if filtered else ''} p50 / p99"
            row(name, lambda r, m=mode, f=filtered: "{:.1f} / {:.1f} ms".format(
                case(r, m, f)["p50_ms"], case(r, m, f)["p99_ms"]))
    row("recall@10 vs exact (ef 128)", lambda r: f"{idx(r)['recall_at_10']:.4f}")
    row("… with the 10 % filter inside the graph", lambda r: "?" if idx(r).get("filtered_recall_at_10") is None else f"{idx(r)['filtered_recall_at_10']:.4f}")
    row("exact scan, all queries", lambda r: f"{idx(r)['exact_scan_seconds']:.1f} s")
    row("ingest 100 new docs (peak RSS)", lambda r: f"{r['add_100']['seconds']:.1f} s ({r['add_100']['peak_rss_bytes'] / MIB:,.0f} MiB)")
    row("ingest 100 changed docs (peak RSS)", lambda r: f"{r['change_100']['seconds']:.1f} s ({r['change_100']['peak_rss_bytes'] / MIB:,.0f} MiB)")
    print("| | " + " | ".join(f"{r['chunks'] // 1000:,}k {p.rsplit('/', 1)[-1]}" for r, p in zip(runs, paths)) + " |")
    print("|---|" + "---|" * len(runs))
    print("\n".join(rows))


if __name__ == "__main__":
    main(sys.argv[1:])

//! `lore bench all|scale|rows|index`: runs [`lore::bench`] and renders its
//! reports as tables (or JSON).

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use lore::Config;
use lore::bench::all::{AllBench, AllOptions};
use lore::bench::scale::{IndexBench, ScaleBench, SearchCase};
use lore::bench::{GraphBench, Latency};

const MIB: f64 = (1u64 << 20) as f64;

fn say(stage: &str) {
    eprintln!("lore: bench: {stage}");
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("while writing {}", path.display()))
}

/// `lore bench all`.
pub fn all(
    config: &Config,
    mut options: AllOptions,
    generators: &[String],
    json: Option<&Path>,
) -> anyhow::Result<()> {
    for name in generators {
        let mut config = config.clone();
        config.generator.model = Some(name.clone());
        options.generators.push(config.generator_path());
    }
    let report =
        lore::bench::all::all(config, &options, &say).context("while running the benchmarks")?;
    print_all(&report);
    if let Some(path) = json {
        write_json(path, &report)?;
    }
    Ok(())
}

fn latency_line(name: &str, l: &Latency) {
    println!(
        "  {name:<26} p50 {:>8.2} ms  p99 {:>8.2} ms  {:>8.1} queries/s",
        l.p50_ms, l.p99_ms, l.qps
    );
}

fn graph_lines(name: &str, g: &GraphBench) {
    println!(
        "{name}: {} vectors, recall@10 {:.4} against exact, {:.1}x faster than exact",
        g.vectors, g.recall_at_10, g.speedup
    );
    latency_line("hnsw top-10", &g.hnsw);
    latency_line("exact top-10 (baseline)", &g.exact);
}

fn case_name(case: &SearchCase) -> String {
    let mode = serde_json::to_value(case.mode)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    if case.filtered {
        format!("{mode} + filter (10%)")
    } else {
        mode
    }
}

fn print_all(r: &AllBench) {
    let m = &r.machine;
    println!(
        "machine: {} ({} cores, {:.1} GiB)",
        m.cpu,
        m.cores,
        m.memory_bytes as f64 / MIB / 1024.0
    );
    let c = &r.chunking;
    println!(
        "chunking: {} documents, {:.1} MB -> {} chunks in {:.2}s: {:.2} MB/s",
        c.documents,
        c.bytes as f64 / 1e6,
        c.chunks,
        c.seconds,
        c.mb_per_s
    );
    let e = &r.embedding;
    println!(
        "embedding: {:.1} chunks/s, {:.0} tokens/s ({} chunks, {:.0} tokens each)",
        e.lore.chunks_per_s, e.lore.tokens_per_s, e.lore.chunks, e.mean_tokens
    );
    if let Some(exact) = &e.f32 {
        println!(
            "  in f32: {:.1} chunks/s; int8 is {:.2}x",
            exact.chunks_per_s,
            e.lore.chunks_per_s / exact.chunks_per_s
        );
    }
    if let (Some(b), Some(ratio)) = (&e.baseline, e.ratio) {
        println!(
            "  baseline {}: {:.1} chunks/s, {:.0} tokens/s; lore is {ratio:.2}x",
            b.backend, b.chunks_per_s, b.tokens_per_s
        );
    }
    for (name, run) in [("cold", &r.ingest_cold), ("unchanged", &r.ingest_unchanged)] {
        println!(
            "ingest {name}: {} files, {} chunks embedded in {:.1}s: {:.1} files/s, {:.1} chunks/s",
            run.report.files_seen,
            run.report.chunks_embedded,
            run.report.seconds,
            run.files_per_s,
            run.chunks_per_s
        );
    }
    println!(
        "search ({} chunks, k = 10, warm, query embedding included):",
        r.chunks
    );
    for case in &r.search {
        latency_line(&case_name(case), &case.latency);
    }
    graph_lines("index graph", &r.graph);
    if let Some(g) = &r.graph_scaled {
        graph_lines("synthetic graph", g);
        println!("  built in {:.1}s", g.build_seconds);
    }
    for g in &r.generators {
        println!(
            "generator {}: prompt {:.0} tokens/s ({} tokens), decode {:.1} tokens/s, first token {:.0} ms cold, {:.0} ms repeated, {:.0} ms for a new question after the same text",
            g.model,
            g.prompt_tokens_per_s,
            g.prompt_tokens,
            g.gen_tokens_per_s,
            g.time_to_first_token_ms,
            g.repeat_ttft_ms,
            g.new_question_ttft_ms
        );
    }
    for c in &r.conversations {
        println!(
            "conversation {}: rewrite {:.0} ms ({:.0} prompt tokens) = {:.2}x of answering ({:.0} ms), {} conversations, same top document {:.0}%",
            c.model,
            c.rewrite_ms,
            c.rewrite_prompt_tokens,
            c.ratio,
            c.answer_ms,
            c.conversations,
            c.same_top_document * 100.0
        );
    }
    for q in &r.qa {
        let r = &q.report;
        println!(
            "answers {}: fact {:.0}%, gold source cited {:.0}% (retrieved {:.0}%), wrongly abstained {:.0}% of {}; out of corpus abstained: far {:.0}% of {}, near {:.0}% of {}; median {:.1} s",
            q.generator,
            r.fact * 100.0,
            r.cited * 100.0,
            r.retrieved * 100.0,
            r.wrongly_abstained * 100.0,
            r.answerable,
            r.far_abstained * 100.0,
            r.far,
            r.near_abstained * 100.0,
            r.near,
            r.median_seconds
        );
    }
    println!(
        "disk: {:.0} KiB per 1k chunks; memory: {:.0} MiB after search, {:.0} MiB peak; {:.0}s in all",
        r.disk_bytes_per_1k_chunks / 1024.0,
        r.search_rss_bytes as f64 / MIB,
        r.peak_rss_bytes as f64 / MIB,
        r.seconds
    );
}

/// `lore bench scale`.
pub fn scale(
    config: &Config,
    chunks: usize,
    work: &Path,
    queries: &Path,
    limit: usize,
    json: Option<&Path>,
) -> anyhow::Result<()> {
    let report = lore::bench::scale::scale(config, chunks, work, queries, limit, &say)
        .context("while running the scale benchmark")?;
    print_scale(&report);
    if let Some(path) = json {
        write_json(path, &report)?;
    }
    Ok(())
}

fn print_scale(r: &ScaleBench) {
    println!(
        "{} chunks in {} documents, derived from {} real chunks ({:.0} MB of rows in {:.0}s)",
        r.chunks,
        r.rows.documents,
        r.rows.base_chunks,
        r.rows.bytes as f64 / 1e6,
        r.rows.seconds
    );
    let import = &r.import;
    if let Some(report) = import.report.first() {
        let s = &report.stores;
        println!(
            "import: {:.0}s ({:.0} chunks/s), peak {:.0} MiB; of which sled {:.0}s, tantivy {:.0}s, graph {:.0}s",
            import.seconds,
            report.chunks_written as f64 / import.seconds.max(1e-9),
            import.peak_rss_bytes as f64 / MIB,
            s.docs,
            s.keywords,
            s.graph
        );
    }
    print_index(&r.index.report);
    for (name, phase) in [
        ("add 100 documents", &r.add_100),
        ("change 100 documents", &r.change_100),
    ] {
        println!(
            "{name}: {:.1}s (ingest {:.1}s, {} chunks embedded), peak {:.0} MiB",
            phase.seconds,
            phase.report.seconds,
            phase.report.chunks_embedded,
            phase.peak_rss_bytes as f64 / MIB
        );
    }
}

fn print_index(r: &IndexBench) {
    println!(
        "index: {} chunks, {} documents; opened in {:.0} ms; {:.0} MiB at rest ({:.0} MiB anonymous), {:.0} MiB peak under search; {:.0} MiB on disk",
        r.chunks,
        r.documents,
        r.open_ms,
        r.rss_open_bytes as f64 / MIB,
        r.anon_open_bytes as f64 / MIB,
        r.rss_peak_bytes as f64 / MIB,
        r.disk_bytes as f64 / MIB
    );
    println!(
        "search ({} queries, k = 10, query embedding included):",
        r.queries
    );
    for case in &r.searches {
        latency_line(&case_name(case), &case.latency);
    }
    println!(
        "graph recall@10 {:.4} against an exact scan (ef {}), {} with the 10% filter inside the graph; the exact scan took {:.1}s for all queries",
        r.recall_at_10,
        r.ef_search,
        r.filtered_recall_at_10
            .map_or("n/a (no chunk passes it)".to_string(), |f| format!(
                "{f:.4}"
            )),
        r.exact_scan_seconds
    );
}

/// `lore bench rows`.
pub fn rows(config: Config, chunks: usize, out: &Path) -> anyhow::Result<()> {
    let engine = lore::Engine::open_existing(config)?;
    let collection = engine.collection(lore::types::DEFAULT_COLLECTION)?;
    let report = if out.as_os_str() == "-" {
        let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
        let report = lore::bench::scale::rows(collection.index(), chunks, &mut stdout)?;
        stdout.flush()?;
        report
    } else {
        let file = std::fs::File::create(out)
            .with_context(|| format!("while creating {}", out.display()))?;
        let mut file = std::io::BufWriter::new(file);
        lore::bench::scale::rows(collection.index(), chunks, &mut file)?
    };
    eprintln!(
        "lore: bench: {} rows in {} documents from {} real chunks ({:.0} MB, {:.1}s)",
        report.rows,
        report.documents,
        report.base_chunks,
        report.bytes as f64 / 1e6,
        report.seconds
    );
    Ok(())
}

/// `lore bench index`.
pub fn index(config: Config, queries: &Path, limit: usize, json: bool) -> anyhow::Result<()> {
    if !config.index.join("docs").exists() {
        anyhow::bail!("no index at {}", config.index.display());
    }
    let queries = lore::bench::read_queries(queries, limit)?;
    let report = lore::bench::scale::index(config, &queries)?;
    if json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
        return Ok(());
    }
    print_index(&report);
    Ok(())
}

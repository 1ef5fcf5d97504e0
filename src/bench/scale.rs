//! Scale runs: `lore bench rows` writes a synthetic collection of any size
//! in the import format, derived from a real index's chunks; `lore bench
//! index` measures an index where it lies; `lore bench scale` runs both at
//! one size, each phase (import, open and search, ingesting 100 changed
//! documents) in a process of its own, so its peak memory is its own.
//!
//! Synthetic chunk `i` mixes real chunk `a = i mod B` with a random real
//! chunk `b`: its vector is `(1 - w)·a + w·b` (`w` uniform in 0..0.3) plus
//! uniform noise of ±0.03 per dimension, renormalised; its text is `a`'s
//! sentences from a random one on (wrapping round), then `b`'s first. So
//! the collection keeps the clusters, vocabulary and lengths of real text,
//! no two chunks are the same, and recall stays measurable against exact
//! search over the very vectors stored. Every tenth document carries
//! `team: blue`, for the filtered searches.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Latency, Memory, time_ms};
use crate::config::Config;
use crate::engine::{Engine, ImportReport, ImportRow, IngestReport};
use crate::error::{Error, Result};
use crate::search::{Filter, Mode, SearchRequest};
use crate::store::{Index, SlotSet};
use crate::types::{DEFAULT_COLLECTION, Slot};

/// Chunks per synthetic document.
const CHUNKS_PER_DOC: usize = 10;
/// Largest weight of the second real chunk in a synthetic one.
const MIX: f32 = 0.3;
/// Noise per dimension, uniform in ±NOISE.
const NOISE: f32 = 0.03;
/// Documents changed in the update phase of `lore bench scale`.
const CHANGED_DOCS: usize = 100;

/// SplitMix64: the same rows on every run, with no dependency.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..1.
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One real chunk the synthetic ones are derived from.
struct Base {
    text: String,
    heading: Vec<String>,
    vector: Vec<f32>,
}

fn base_chunks(index: &Index) -> Result<Vec<Base>> {
    let mut base = Vec::new();
    index.docs().scan_vectors(Slot(0), &mut |slot, vector| {
        if let Some(chunk) = index.chunk_at(slot)? {
            base.push(Base {
                text: chunk.text,
                heading: chunk.heading,
                vector,
            });
        }
        Ok(())
    })?;
    if base.is_empty() {
        return Err(Error::InvalidRequest(
            "the source index has no chunks (lore ingest a corpus into it first)".into(),
        ));
    }
    Ok(base)
}

/// `a`'s sentences from a random one on, wrapping round, then `b`'s first.
fn rewrite(a: &str, b: &str, mix: &mut Mix) -> String {
    let sentences: Vec<&str> = a.split_inclusive(". ").map(str::trim_end).collect();
    let start = mix.below(sentences.len().max(1));
    let mut text = sentences[start..]
        .iter()
        .chain(&sentences[..start])
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    if let Some(first) = b.split_inclusive(". ").next() {
        text.push(' ');
        text.push_str(first.trim_end());
    }
    text
}

/// Synthetic chunk `i` (see the module docs), its vector rounded to five
/// decimals (the rows stay small; import renormalises).
fn derive(i: usize, base: &[Base], mix: &mut Mix) -> (String, Vec<String>, Vec<f32>) {
    let a = &base[i % base.len()];
    let b = &base[mix.below(base.len())];
    let w = mix.unit() * MIX;
    let mut vector: Vec<f32> = a
        .vector
        .iter()
        .zip(&b.vector)
        .map(|(x, y)| (1.0 - w) * x + w * y + (mix.unit() * 2.0 - 1.0) * NOISE)
        .collect();
    crate::embed::normalize(&mut vector);
    for x in &mut vector {
        *x = (*x * 1e5).round() / 1e5;
    }
    (rewrite(&a.text, &b.text, mix), a.heading.clone(), vector)
}

/// What `lore bench rows` wrote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RowsReport {
    /// Rows (chunks).
    pub rows: u64,
    /// Documents (ten chunks each).
    pub documents: u64,
    /// Real chunks they were derived from.
    pub base_chunks: usize,
    /// Bytes written.
    pub bytes: u64,
    /// Wall time.
    pub seconds: f64,
}

/// Counts what passes through.
struct Counted<'a> {
    inner: &'a mut dyn Write,
    bytes: u64,
}

impl Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `chunks` synthetic rows derived from `source`'s chunks.
pub fn rows(source: &Index, chunks: usize, out: &mut dyn Write) -> Result<RowsReport> {
    let start = Instant::now();
    let base = base_chunks(source)?;
    derived_rows(&base, chunks, out, start)
}

/// Writes `chunks` rows derived from `base`; `start` is when reading it began.
fn derived_rows(
    base: &[Base],
    chunks: usize,
    out: &mut dyn Write,
    start: Instant,
) -> Result<RowsReport> {
    let mut mix = Mix(0x5eed);
    let mut out = Counted {
        inner: out,
        bytes: 0,
    };
    let documents = chunks.div_ceil(CHUNKS_PER_DOC);
    let io = |e: std::io::Error| Error::io(Path::new("rows"), e);
    for n in 0..documents {
        let mut metadata = crate::types::Metadata::new();
        if n % 10 == 0 {
            metadata.insert("team".into(), "blue".into());
        }
        // Chunks lie one after another in their document, so two with the
        // same text (a small base) are still two chunks.
        let mut offset = 0;
        for i in n * CHUNKS_PER_DOC..((n + 1) * CHUNKS_PER_DOC).min(chunks) {
            let (text, heading, vector) = derive(i, base, &mut mix);
            let range = offset..offset + text.len();
            offset = range.end + 1;
            let row = ImportRow {
                path: format!("synthetic/doc-{n:07}.md"),
                text,
                vector,
                chunk_id: None,
                doc_id: None,
                byte_range: Some(range),
                heading,
                title: Some(format!("Synthetic document {n}")),
                metadata: metadata.clone(),
            };
            serde_json::to_writer(&mut out, &row).map_err(|e| Error::store("rows", e))?;
            out.write_all(b"\n").map_err(io)?;
        }
    }
    out.flush().map_err(io)?;
    Ok(RowsReport {
        rows: chunks as u64,
        documents: documents as u64,
        base_chunks: base.len(),
        bytes: out.bytes,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Latency of one kind of search.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchCase {
    /// Retriever.
    pub mode: Mode,
    /// With the `team: blue` filter (10 % of the documents).
    pub filtered: bool,
    /// Latency, query embedding included.
    pub latency: Latency,
    /// Mean hits returned (k is 10).
    pub mean_hits: f64,
}

/// Dense, BM25 and hybrid search, each unfiltered and (when `filter`) with
/// it, the cases interleaved query by query so that they share the
/// machine's noise. Queries are embedded for real, every time.
pub fn search_cases(
    engine: &Engine,
    queries: &[String],
    filter: Option<&Filter>,
) -> Result<Vec<SearchCase>> {
    let mut cases: Vec<(Mode, Option<&Filter>)> = Vec::new();
    for mode in [Mode::Hybrid, Mode::Dense, Mode::Bm25] {
        cases.push((mode, None));
        if filter.is_some() {
            cases.push((mode, filter));
        }
    }
    let request = |q: &str, (mode, filter): (Mode, Option<&Filter>)| SearchRequest {
        filter: filter.cloned().unwrap_or_default(),
        ..SearchRequest::new(q, 10, mode)
    };
    for q in queries.iter().take(5) {
        for case in &cases {
            engine.search(&request(q, *case))?;
        }
    }
    let mut samples = vec![Vec::with_capacity(queries.len()); cases.len()];
    let mut hits = vec![0usize; cases.len()];
    for q in queries {
        for (n, case) in cases.iter().enumerate() {
            let (ms, found) = time_ms(|| engine.search(&request(q, *case)))?;
            samples[n].push(ms);
            hits[n] += found.hits.len();
        }
    }
    Ok(cases
        .iter()
        .zip(samples)
        .zip(hits)
        .map(|((case, samples), hits)| SearchCase {
            mode: case.0,
            filtered: case.1.is_some(),
            latency: Latency::of(samples),
            mean_hits: hits as f64 / queries.len().max(1) as f64,
        })
        .collect())
}

/// The `team: blue` filter the synthetic rows carry on every tenth document.
pub fn blue() -> Filter {
    Filter {
        metadata: [("team".to_string(), "blue".to_string())].into(),
        ..Filter::default()
    }
}

/// Result of `lore bench index`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexBench {
    /// Documents.
    pub documents: u64,
    /// Chunks.
    pub chunks: u64,
    /// Opening the index (every store, recovery checks included), ms.
    pub open_ms: f64,
    /// Resident memory right after opening.
    pub rss_open_bytes: u64,
    /// The part of it not backed by a file (mapped vectors are).
    pub anon_open_bytes: u64,
    /// Peak resident memory through opening and every search.
    pub rss_peak_bytes: u64,
    /// Bytes on disk.
    pub disk_bytes: u64,
    /// Bytes on disk of each store.
    #[serde(default)]
    pub disk_by_store: std::collections::BTreeMap<String, u64>,
    /// Queries, each run once per case.
    pub queries: usize,
    /// Dense, BM25 and hybrid, with and without the filter.
    pub searches: Vec<SearchCase>,
    /// The graph's `ef` at search time.
    pub ef_search: usize,
    /// Mean share of the exact top 10 (a scan of every stored vector) the
    /// graph returns, for the same query vectors.
    pub recall_at_10: f64,
    /// The same with the 10 % filter applied inside the graph search,
    /// against an exact scan of the filter's chunks (none when no chunk
    /// passes the filter).
    #[serde(default)]
    pub filtered_recall_at_10: Option<f64>,
    /// The exact scan for all queries at once, seconds (the baseline the
    /// graph saves).
    pub exact_scan_seconds: f64,
}

/// Opens the index `config` names and measures it in place.
pub fn index(config: Config, queries: &[String]) -> Result<IndexBench> {
    let ef_search = config.hnsw.ef_search;
    let start = Instant::now();
    let engine = Engine::open(config)?;
    let collection = engine.collection(DEFAULT_COLLECTION)?;
    let open_ms = start.elapsed().as_secs_f64() * 1000.0;
    let opened = Memory::now();
    let searches = search_cases(&engine, queries, Some(&blue()))?;
    let rss_peak_bytes = Memory::now().peak_bytes;
    let index = collection.index();
    let refs: Vec<&str> = queries.iter().map(String::as_str).collect();
    let vectors = collection.embedder()?.embed(&refs)?;
    let scan = Instant::now();
    let exact = exact_top_k(index, &vectors, 10, None)?;
    let exact_scan_seconds = scan.elapsed().as_secs_f64();
    let recall = graph_recall(index, &vectors, &exact, None)?;
    // The graph's own filtered search (a search would score a filter this
    // selective exactly; this measures the graph path wider filters take).
    let filter = blue();
    let compiled = filter.compile()?;
    let blue: SlotSet = index
        .doc_table()?
        .docs
        .iter()
        .filter(|e| compiled.matches(&e.record))
        .flat_map(|e| e.slots.iter().copied())
        .collect();
    let filtered_recall = if blue.is_empty() {
        None
    } else {
        let exact_blue = exact_top_k(index, &vectors, 10, Some(&blue))?;
        Some(graph_recall(index, &vectors, &exact_blue, Some(&blue))?)
    };
    let status = index.status()?;
    Ok(IndexBench {
        documents: status.documents,
        chunks: status.chunks,
        open_ms,
        rss_open_bytes: opened.rss_bytes,
        anon_open_bytes: opened.anon_bytes,
        rss_peak_bytes,
        disk_bytes: status.index_bytes,
        disk_by_store: index.disk_by_store().into_iter().collect(),
        queries: queries.len(),
        searches,
        ef_search,
        recall_at_10: recall,
        filtered_recall_at_10: filtered_recall,
        exact_scan_seconds,
    })
}

/// The exact top `k` slots of every query, in one pass over the stored
/// vectors (they are never all held at once).
/// Only slots in `among` count, when given.
fn exact_top_k(
    index: &Index,
    queries: &[Vec<f32>],
    k: usize,
    among: Option<&SlotSet>,
) -> Result<Vec<Vec<Slot>>> {
    let mut best: Vec<Vec<(f32, Slot)>> = vec![Vec::with_capacity(k + 1); queries.len()];
    index.docs().scan_vectors(Slot(0), &mut |slot, vector| {
        if among.is_some_and(|a| !a.contains(slot)) {
            return Ok(());
        }
        for (query, top) in queries.iter().zip(best.iter_mut()) {
            let score = crate::kernels::dot(query, &vector);
            if top.len() < k || score > top[top.len() - 1].0 {
                let at = top.partition_point(|(s, _)| *s >= score);
                top.insert(at, (score, slot));
                top.truncate(k);
            }
        }
        Ok(())
    })?;
    Ok(best
        .into_iter()
        .map(|top| top.into_iter().map(|(_, s)| s).collect())
        .collect())
}

/// Mean share of each `truth` the graph's search returns, within `among`.
fn graph_recall(
    index: &Index,
    queries: &[Vec<f32>],
    truth: &[Vec<Slot>],
    among: Option<&SlotSet>,
) -> Result<f64> {
    let mut recall = 0.0;
    let keep = |slot: Slot| among.is_none_or(|a| a.contains(slot));
    for (query, truth) in queries.iter().zip(truth) {
        let found = index.vectors().search(query, 10, Some(&keep))?;
        let hit = found.iter().filter(|(s, _)| truth.contains(s)).count();
        recall += hit as f64 / truth.len().max(1) as f64;
    }
    Ok(recall / queries.len().max(1) as f64)
}

/// One phase of `lore bench scale`, run as a child process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Phase<T> {
    /// Wall time of the process, start-up included.
    pub seconds: f64,
    /// Its peak resident memory.
    pub peak_rss_bytes: u64,
    /// What it reported (its `--json` output).
    pub report: T,
}

/// Result of `lore bench scale`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScaleBench {
    /// Chunks in the collection.
    pub chunks: u64,
    /// The rows written.
    pub rows: RowsReport,
    /// `lore import` of them into a fresh index.
    pub import: Phase<Vec<ImportReport>>,
    /// `lore bench index`: open, memory, searches, recall.
    pub index: Phase<IndexBench>,
    /// `lore ingest` of 100 new real documents into the big index.
    pub add_100: Phase<IngestReport>,
    /// `lore ingest` of the same 100 documents, changed.
    pub change_100: Phase<IngestReport>,
}

/// `lore bench scale`: a collection of `chunks` chunks derived from the
/// index `config` names, built and measured in `work` (replaced), queries
/// from `queries` (a file `lore bench index` reads).
pub fn scale(
    config: &Config,
    chunks: usize,
    work: &Path,
    queries: &Path,
    limit: usize,
    progress: &dyn Fn(&str),
) -> Result<ScaleBench> {
    super::fresh_dir(work)?;
    let rows_path = work.join("rows.jsonl");
    progress(&format!("writing {chunks} rows to {}", rows_path.display()));
    let (rows, texts) = {
        let start = Instant::now();
        let source = Engine::open(config.clone())?;
        let base = base_chunks(source.collection(DEFAULT_COLLECTION)?.index())?;
        let file = std::fs::File::create(&rows_path).map_err(|e| Error::io(&rows_path, e))?;
        let mut out = std::io::BufWriter::new(file);
        let rows = derived_rows(&base, chunks, &mut out, start)?;
        let texts: Vec<String> = base
            .into_iter()
            .map(|b| b.text)
            .take(CHANGED_DOCS * 3)
            .collect();
        (rows, texts)
    };
    let index = work.join("index");
    let at = |args: &[&str]| -> Vec<OsString> {
        let mut all: Vec<OsString> = vec!["--index".into(), index.clone().into()];
        all.extend(args.iter().map(OsString::from));
        all
    };
    progress("importing them into a fresh index");
    let import = child(&at(&["import", "--json"]), Some(&rows_path))?;
    std::fs::remove_file(&rows_path).map_err(|e| Error::io(&rows_path, e))?;
    progress("opening and searching it");
    let mut args = at(&["bench", "index", "--json", "--limit"]);
    args.push(limit.to_string().into());
    args.push("--queries".into());
    args.push(queries.into());
    let measured = child(&args, None)?;
    let docs = work.join("changed");
    write_docs(&docs, &texts, "")?;
    progress("ingesting 100 new documents");
    let add_100 = child(&at(&["ingest", "--json"]), Some(&docs))?;
    write_docs(&docs, &texts, "Revised. ")?;
    progress("ingesting the same 100 documents, changed");
    let change_100 = child(&at(&["ingest", "--json"]), Some(&docs))?;
    Ok(ScaleBench {
        chunks: chunks as u64,
        rows,
        import,
        index: measured,
        add_100,
        change_100,
    })
}

/// 100 Markdown files in `dir`, each three real chunks' text, `prefix`
/// before each paragraph (so a second call changes every chunk).
fn write_docs(dir: &Path, texts: &[String], prefix: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for n in 0..CHANGED_DOCS {
        let body: Vec<String> = (0..3)
            .map(|j| format!("{prefix}{}", texts[(n * 3 + j) % texts.len()]))
            .collect();
        let path = dir.join(format!("doc-{n:03}.md"));
        let text = format!("# Document {n}\n\n{}\n", body.join("\n\n"));
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

/// Runs this binary with `args` (and `path` last), reading its JSON
/// output; its peak memory comes from `wait4`.
fn child<T: DeserializeOwned>(args: &[OsString], path: Option<&PathBuf>) -> Result<Phase<T>> {
    let exe = std::env::current_exe().map_err(|e| Error::io(Path::new("current_exe"), e))?;
    let start = Instant::now();
    let mut command = Command::new(&exe);
    command.args(args);
    if let Some(path) = path {
        command.arg(path);
    }
    let mut running = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| Error::io(&exe, e))?;
    let mut stdout = String::new();
    if let Some(mut out) = running.stdout.take() {
        out.read_to_string(&mut stdout)
            .map_err(|e| Error::io(&exe, e))?;
    }
    let (code, peak_rss_bytes) = reap(running.id())?;
    let seconds = start.elapsed().as_secs_f64();
    let what = args
        .iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    if code != 0 {
        return Err(Error::store(
            "bench",
            format!("`lore {what}` exited with {code}"),
        ));
    }
    let report = serde_json::from_str(&stdout)
        .map_err(|e| Error::store("bench", format!("`lore {what}` printed no report: {e}")))?;
    Ok(Phase {
        seconds,
        peak_rss_bytes,
        report,
    })
}

/// Waits for child `pid`: its exit code and peak resident bytes.
fn reap(pid: u32) -> Result<(i32, u64)> {
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 writes it and `status` for our own
    // child, which std has not waited for (its handle is dropped unwaited).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
    if reaped < 0 {
        return Err(Error::io(
            Path::new("wait4"),
            std::io::Error::last_os_error(),
        ));
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    // Linux reports ru_maxrss in KiB.
    Ok((code, usage.ru_maxrss as u64 * 1024))
}

//! The [`VectorIndex`] lore serves from: a compact read-only segment
//! ([`super::segment`]: CSR links, int8 vectors, memory-mapped) plus a small
//! mutable hnsw_rs graph of the vectors written since the segment was built.
//! Searches query both and merge; segment candidates are rescored with the
//! exact vectors of the [`VectorSource`] (the doc store). A merge folds the
//! mutable graph into a new segment; hnsw_rs cannot delete, so removed slots
//! are tombstones filtered inside the search (results still fill `k`) until
//! a rebuild drops them.
//!
//! Persistence: each dump goes to `gen-N.tmp/` (the mutable graph, then
//! `meta.json` with the watermark and the segment's file name), is fsynced
//! and renamed to `gen-N/`; the newest complete generation wins on open and
//! older ones, and segment files no generation names, are deleted. A segment
//! file is written and fsynced before a generation names it, so a crash at
//! any step leaves the previous generation whole. A dump of the previous
//! release (no segment) is converted once, on open.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use hnsw_rs::api::AnnT;
use hnsw_rs::hnswio::HnswIo;
use hnsw_rs::prelude::{Distance, Hnsw};
use serde::{Deserialize, Serialize};

use super::segment::Segment;
use super::{Owner, SlotSet, VectorIndex, VectorSource, check_dims};
use crate::config::HnswConfig;
use crate::error::{Error, Result};
use crate::kernels::dot;
use crate::types::Slot;

const BASENAME: &str = "graph";
const META: &str = "meta.json";
const MAX_LAYERS: usize = 16;
/// Dumps that name their segment (older ones hold the whole graph).
const FORMAT: u32 = 2;
/// Segment candidates rescored beyond the `k` asked for, at the least.
const RESCORE_MARGIN: usize = 16;
/// Up to this many points the mutable graph is scanned rather than
/// searched (`lore bench all`: at 3,191 vectors a scan takes 0.22 ms, the
/// graph 0.53 ms).
const SCAN_BELOW: usize = 2_048;

type Graph = Hnsw<'static, f32, UnitCosine>;

/// Cosine distance of unit vectors, `1 - a·b` clamped at 0. anndists'
/// `DistCosine` recomputes both norms in f64 for every pair and does not
/// vectorise; its `DistDot` asserts on rounding above 1. Every vector lore
/// stores and queries with is normalised, so the dot product is enough.
#[derive(Debug, Default, Clone, Copy)]
pub struct UnitCosine;

impl Distance<f32> for UnitCosine {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - dot(a, b)).max(0.0)
    }
}

/// What a dump records besides the graph.
#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    /// Every live slot below this was in the graph when it was dumped.
    watermark: u64,
    /// Points in the dump (0: no graph files).
    points: usize,
    /// Vector dimension.
    dim: usize,
    /// Instance id of the doc store the graph was built from.
    #[serde(default)]
    owner: Option<String>,
    /// Size and BLAKE3 hash of each file of the dump: hnsw_rs trusts its
    /// files (a bad length exits the process or allocates 2^40 bytes), so
    /// it only ever sees bytes that hash to what was written.
    #[serde(default)]
    files: Vec<FileSum>,
    /// BLAKE3 of this record with `sum` empty: a damaged watermark would
    /// otherwise silently skip re-inserting vectors.
    #[serde(default)]
    sum: String,
    /// 2: the dump is the mutable graph beside `segment`; absent (1): the
    /// dump is the whole graph (converted on open).
    #[serde(default, skip_serializing_if = "is_zero")]
    format: u32,
    /// The segment file, beside the generations (it checks itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    segment: Option<SegmentRef>,
}

/// Fields the previous release did not write are left out when absent, so
/// its records keep their checksums.
fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A segment file as a generation names it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct SegmentRef {
    name: String,
    bytes: u64,
}

impl Meta {
    fn digest(&self) -> Result<String> {
        let unsummed = Meta {
            sum: String::new(),
            files: self.files.clone(),
            owner: self.owner.clone(),
            segment: self.segment.clone(),
            ..*self
        };
        let json = serde_json::to_vec(&unsummed).map_err(err)?;
        Ok(blake3::hash(&json).to_hex().to_string())
    }
}

/// One dump file as written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct FileSum {
    name: String,
    bytes: u64,
    blake3: String,
}

impl FileSum {
    fn of(path: &Path) -> Result<FileSum> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let mut hasher = blake3::Hasher::new();
        let bytes = std::io::copy(&mut std::io::BufReader::new(file), &mut hasher)
            .map_err(|e| Error::io(path, e))?;
        Ok(FileSum {
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            bytes,
            blake3: hasher.finalize().to_hex().to_string(),
        })
    }
}

/// The dump's files, hashed (sorted by name).
fn file_sums(gen_dir: &Path) -> Result<Vec<FileSum>> {
    let mut sums = Vec::new();
    for entry in std::fs::read_dir(gen_dir).map_err(|e| Error::io(gen_dir, e))? {
        let path = entry.map_err(|e| Error::io(gen_dir, e))?.path();
        if path.file_name().is_some_and(|n| n != META) {
            sums.push(FileSum::of(&path)?);
        }
    }
    sums.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(sums)
}

struct Inner {
    /// The read-only part (none until the first merge).
    segment: Option<std::sync::Arc<Segment>>,
    /// Vectors written since the segment was built.
    graph: Graph,
    tombstones: HashSet<u64>,
    generation: u64,
}

impl Inner {
    fn points(&self) -> usize {
        self.graph.get_nb_point() + self.segment.as_ref().map_or(0, |s| s.len())
    }

    /// The segment, unless a damaged block was found in it.
    fn sound_segment(&self) -> Option<&Segment> {
        self.segment.as_deref().filter(|s| !s.is_damaged())
    }
}

/// The mutable graph's points, indexed by slot.
type PointTable = Vec<Option<std::sync::Arc<hnsw_rs::hnsw::Point<'static, f32>>>>;

/// Segment + mutable hnsw_rs graph (see the module docs).
pub struct HnswVectorIndex {
    dir: PathBuf,
    dim: usize,
    owner: String,
    config: HnswConfig,
    source: std::sync::Arc<dyn VectorSource>,
    inner: RwLock<Inner>,
    /// Built for exact search among a few slots, valid for the number of
    /// changes it was built at (a table built while an insert ran is never
    /// reused after it).
    points: RwLock<Option<(u64, std::sync::Arc<PointTable>)>>,
    /// Bumped after every insert and rebuild.
    changes: std::sync::atomic::AtomicU64,
    /// A merge building its segment on its own thread.
    merging: std::sync::Mutex<Option<Merging>>,
}

/// A merge in the background: a new segment of every vector that was live
/// when it started (all of them below `upto`), built on its own thread
/// while searches and writes go on against the current segment and
/// mutable graph.
struct Merging {
    upto: Slot,
    handle: std::thread::JoinHandle<Result<Segment>>,
}

fn err(e: impl std::fmt::Display) -> Error {
    Error::store("vectors", e)
}

impl HnswVectorIndex {
    /// Opens the newest complete dump in `dir` (or an empty index), with
    /// `source` for exact vectors. Returns the index and the dump's
    /// watermark: live slots at or above it must be inserted again. A dump
    /// that fails to load, fails its checksums or belongs to another doc
    /// store is reported as an error so the caller can rebuild from the
    /// doc store. A dump of the previous release is converted here, once.
    pub fn open(
        dir: &Path,
        dim: usize,
        config: &HnswConfig,
        owner: &Owner,
        source: std::sync::Arc<dyn VectorSource>,
    ) -> Result<(Self, Slot)> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut convert = false;
        let (generation, segment, graph, watermark) = match latest_generation(dir)? {
            Some(generation) => {
                let gen_dir = generation_dir(dir, generation);
                let meta: Meta = read_meta(&gen_dir)?;
                if meta.dim != dim {
                    return Err(Error::DimensionMismatch {
                        expected: dim,
                        got: meta.dim,
                    });
                }
                if !owner.accepts(meta.owner.as_deref()) {
                    return Err(err("the graph was built for another doc store"));
                }
                let segment = meta
                    .segment
                    .as_ref()
                    .map(|s| open_segment(dir, s, dim))
                    .transpose()?;
                // What a killed process left (half-written dumps, segments
                // no generation names), once the named one is known good.
                let named = meta.segment.as_ref().map(|s| s.name.as_str());
                remove_older_generations(dir, generation, Segments::AllBut(named));
                let graph = if meta.points == 0 {
                    new_graph(config, 0)
                } else {
                    if meta.files.is_empty() || file_sums(&gen_dir)? != meta.files {
                        return Err(err(format!(
                            "graph files in {} do not match their checksums",
                            gen_dir.display()
                        )));
                    }
                    load_graph(&gen_dir, config.mmap_vectors)?
                };
                convert = meta.format < FORMAT && meta.points > 0;
                (generation, segment, graph, meta.watermark)
            }
            None => (0, None, new_graph(config, 0), 0),
        };
        let index = HnswVectorIndex {
            dir: dir.to_path_buf(),
            dim,
            owner: owner.id.clone(),
            config: config.clone(),
            source,
            inner: RwLock::new(Inner {
                segment: segment.map(std::sync::Arc::new),
                graph,
                tombstones: HashSet::new(),
                generation,
            }),
            points: RwLock::new(None),
            changes: std::sync::atomic::AtomicU64::new(0),
            merging: std::sync::Mutex::new(None),
        };
        if convert {
            tracing::info!(dir = %dir.display(), "converting the vector graph to a compact segment (once)");
            index.compact_graph()?;
            index.persist(Slot(watermark))?;
        }
        Ok((index, Slot(watermark)))
    }

    /// A fresh, empty index in `dir`, discarding whatever dumps were there.
    pub fn create_empty(
        dir: &Path,
        dim: usize,
        config: &HnswConfig,
        owner: &Owner,
        source: std::sync::Arc<dyn VectorSource>,
    ) -> Result<Self> {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        Ok(Self::open(dir, dim, config, owner, source)?.0)
    }

    fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, Inner>> {
        self.inner.read().map_err(|_| err("lock poisoned"))
    }

    fn write(&self) -> Result<std::sync::RwLockWriteGuard<'_, Inner>> {
        self.inner.write().map_err(|_| err("lock poisoned"))
    }

    /// The mutable graph's points by slot, built on the first call after a
    /// change (one pass over the graph; the vectors are not copied).
    fn points(&self, inner: &Inner) -> Result<std::sync::Arc<PointTable>> {
        let now = self.changes.load(std::sync::atomic::Ordering::SeqCst);
        if let Some((at, table)) = self
            .points
            .read()
            .map_err(|_| err("lock poisoned"))?
            .clone()
            && at == now
        {
            return Ok(table);
        }
        let mut table: PointTable = Vec::new();
        // hnsw_rs's point iterator panics on a graph without points.
        let points = (inner.graph.get_nb_point() > 0).then(|| inner.graph.get_point_indexation());
        for point in points.into_iter().flatten() {
            let at = point.get_origin_id();
            if table.len() <= at {
                table.resize(at + 1, None);
            }
            table[at] = Some(point);
        }
        let table = std::sync::Arc::new(table);
        *self.points.write().map_err(|_| err("lock poisoned"))? = Some((now, table.clone()));
        Ok(table)
    }

    /// Marks the point table stale (the graph changed).
    fn forget_points(&self) {
        self.changes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    fn check_items(&self, items: &[(Slot, Vec<f32>)]) -> Result<()> {
        check_dims(self.dim, items.iter().map(|(_, v)| v.as_slice()))
    }

    fn write_segment(&self, graph: &Graph) -> Result<Segment> {
        write_segment(&self.dir, self.dim, graph)
    }

    fn merging(&self) -> Result<std::sync::MutexGuard<'_, Option<Merging>>> {
        self.merging.lock().map_err(|_| err("lock poisoned"))
    }

    /// Starts building a segment of `items` (every live vector) on its own
    /// thread, unless one is being built already.
    fn merge_in_background(&self, all: &dyn Fn() -> Result<Vec<(Slot, Vec<f32>)>>) -> Result<()> {
        let mut merging = self.merging()?;
        if merging.is_some() {
            return Ok(());
        }
        let items = all()?;
        let upto = items.last().map_or(Slot(0), |(s, _)| Slot(s.0 + 1));
        let (config, dir, dim) = (self.config.clone(), self.dir.clone(), self.dim);
        let handle = std::thread::Builder::new()
            .name("lore-merge".into())
            .spawn(move || {
                let graph = build_graph(&config, &items);
                drop(items);
                write_segment(&dir, dim, &graph)
            })
            .map_err(|e| err(format!("cannot start a merge: {e}")))?;
        *merging = Some(Merging { upto, handle });
        Ok(())
    }

    /// Puts a finished merge's segment in place: the vectors written since
    /// it started move to a fresh mutable graph, and tombstones of slots
    /// neither holds are dropped (and returned).
    fn swap_in(&self, segment: Segment, upto: Slot) -> Result<Vec<Slot>> {
        let later: Vec<(Slot, Vec<f32>)> = {
            let inner = self.read()?;
            let points =
                (inner.graph.get_nb_point() > 0).then(|| inner.graph.get_point_indexation());
            points
                .into_iter()
                .flatten()
                .filter(|p| p.get_origin_id() as u64 >= upto.0)
                .map(|p| (Slot(p.get_origin_id() as u64), p.get_v().to_vec()))
                .collect()
        };
        let graph = build_graph(&self.config, &later);
        let mut inner = self.write()?;
        let mut dropped = Vec::new();
        let mut kept = HashSet::new();
        for &slot in &inner.tombstones {
            if slot >= upto.0 || segment.node(Slot(slot))?.is_some() {
                kept.insert(slot);
            } else {
                dropped.push(Slot(slot));
            }
        }
        inner.segment = Some(std::sync::Arc::new(segment));
        inner.graph = graph;
        inner.tombstones = kept;
        self.forget_points();
        Ok(dropped)
    }

    /// Turns the mutable graph, when it is the whole index (no segment
    /// yet), into the segment without building anything again.
    fn compact_graph(&self) -> Result<()> {
        let mut inner = self.write()?;
        if inner.graph.get_nb_point() == 0 {
            return Ok(());
        }
        if inner.segment.is_some() {
            return Err(err("a segment exists already: merging needs a rebuild"));
        }
        let segment = self.write_segment(&inner.graph)?;
        inner.segment = Some(std::sync::Arc::new(segment));
        inner.graph = new_graph(&self.config, 0);
        self.forget_points();
        Ok(())
    }

    /// Exact similarities for the best `approx` candidates, from the source.
    fn rescore(&self, query: &[f32], approx: Vec<(Slot, f32)>) -> Result<Vec<(Slot, f32)>> {
        let slots: Vec<Slot> = approx.into_iter().map(|(slot, _)| slot).collect();
        let vectors = self.source.vectors(&slots)?;
        Ok(slots
            .into_iter()
            .zip(vectors)
            .filter_map(|(slot, v)| Some((slot, dot(query, &v?))))
            .collect())
    }

    /// How many segment candidates are rescored for `k` results: `k` and
    /// [`RESCORE_MARGIN`] more. The int8 order is close to the exact one
    /// (a million chunks, `k` 10: recall@10 0.9675 rescoring the top 10,
    /// 0.9845 the top 16, the same as the top 256), and each rescored
    /// vector is a read from the chunk log: a random read from the disk
    /// while the page cache is cold.
    fn rescored(&self, k: usize) -> usize {
        k + RESCORE_MARGIN
    }

    /// The beam of a segment search: twice `ef_search`. Its int8 walk
    /// needs the wider beam to find what hnsw_rs's f32 walk finds with
    /// `ef_search` (measured at a million chunks, graph built with
    /// `ef_construction` 200: recall@10 0.92 with a beam of 128, 0.98 with
    /// 256; built with 128 and `ef_search` 256, a beam of 512: 0.989).
    fn segment_beam(&self, k: usize) -> usize {
        self.config.ef_search.max(k) * 2
    }

    /// Segment hits for `query` (rescored exactly), or every vector scored
    /// from the source when the segment turns out damaged.
    fn segment_hits(
        &self,
        segment: &Segment,
        query: &[f32],
        k: usize,
        keep: &dyn Fn(Slot) -> bool,
    ) -> Result<(Vec<(Slot, f32)>, bool)> {
        match segment.search(query, self.segment_beam(k), keep) {
            Ok(mut approx) => {
                approx.truncate(self.rescored(k));
                Ok((self.rescore(query, approx)?, false))
            }
            Err(e) if segment.is_damaged() => {
                tracing::error!(error = %e, "vector segment damaged: searching exactly until it is rebuilt");
                Ok((
                    super::score_source(self.source.as_ref(), query, keep)?,
                    true,
                ))
            }
            Err(e) => Err(e),
        }
    }
}

/// Writes `graph` as a new segment file in `dir` and opens it.
fn write_segment(dir: &Path, dim: usize, graph: &Graph) -> Result<Segment> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let path = dir.join(format!("segment-{stamp:032x}.seg"));
    super::segment::write(graph, dim, &path)?;
    sync_dir(dir)?;
    Segment::open(&path)
}

fn open_segment(dir: &Path, named: &SegmentRef, dim: usize) -> Result<Segment> {
    if named.name.contains(['/', '\\']) || !named.name.starts_with("segment-") {
        return Err(err(format!("bad segment name {:?}", named.name)));
    }
    let segment = Segment::open(&dir.join(&named.name))?;
    if segment.file_bytes() != named.bytes || segment.dim() != dim {
        return Err(err(format!(
            "segment {} is not the one its generation names",
            named.name
        )));
    }
    Ok(segment)
}

fn new_graph(config: &HnswConfig, expected: usize) -> Graph {
    Hnsw::new(
        config.max_connections,
        expected.max(100_000),
        MAX_LAYERS,
        config.ef_construction,
        UnitCosine,
    )
}

/// A graph of exactly `items`, built on every core.
fn build_graph(config: &HnswConfig, items: &[(Slot, Vec<f32>)]) -> Graph {
    let graph = new_graph(config, items.len());
    let data: Vec<(&[f32], usize)> = items
        .iter()
        .map(|(s, v)| (v.as_slice(), s.0 as usize))
        .collect();
    graph.parallel_insert_slice(&data);
    graph
}

fn generation_dir(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("gen-{generation:08}"))
}

/// The newest generation directory with a `meta.json` (written last).
fn latest_generation(dir: &Path) -> Result<Option<u64>> {
    let mut best = None;
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let Some(number) = name.to_str().and_then(|n| n.strip_prefix("gen-")) else {
            continue;
        };
        let Ok(generation) = number.parse::<u64>() else {
            continue;
        };
        if entry.path().join(META).is_file() && best.is_none_or(|b| generation > b) {
            best = Some(generation);
        }
    }
    Ok(best)
}

fn read_meta(gen_dir: &Path) -> Result<Meta> {
    let path = gen_dir.join(META);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let meta: Meta =
        serde_json::from_slice(&bytes).map_err(|e| err(format!("{}: {e}", path.display())))?;
    if meta.sum != meta.digest()? {
        return Err(err(format!(
            "{} does not match its checksums",
            path.display()
        )));
    }
    Ok(meta)
}

/// Reloads a dump, its vectors mapped from the data file when `mmap`.
/// hnsw_rs ties the graph's lifetime to its loader, so the loader is
/// leaked: one small allocation per open (and the mapping, while the graph
/// lives). Its asserts on corrupt files are turned into errors.
fn load_graph(gen_dir: &Path, mmap: bool) -> Result<Graph> {
    let options = hnsw_rs::hnswio::ReloadOptions::new(mmap);
    let loader = Box::new(HnswIo::new_with_options(gen_dir, BASENAME, options));
    match std::panic::catch_unwind(AssertUnwindSafe(move || {
        Box::leak(loader).load_hnsw::<f32, UnitCosine>()
    })) {
        Ok(Ok(graph)) => Ok(graph),
        Ok(Err(e)) => Err(err(format!(
            "cannot load graph in {}: {e}",
            gen_dir.display()
        ))),
        Err(_) => Err(err(format!("corrupt graph in {}", gen_dir.display()))),
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(dir, e))
}

fn sync_files(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        std::fs::File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&path, e))?;
    }
    sync_dir(dir)
}

impl VectorIndex for HnswVectorIndex {
    fn insert(&self, items: &[(Slot, Vec<f32>)]) -> Result<()> {
        self.check_items(items)?;
        let inner = self.read()?;
        let data: Vec<(&[f32], usize)> = items
            .iter()
            .map(|(s, v)| (v.as_slice(), s.0 as usize))
            .collect();
        inner.graph.parallel_insert_slice(&data);
        self.forget_points();
        Ok(())
    }

    fn remove(&self, slots: &[Slot]) {
        if let Ok(mut inner) = self.inner.write() {
            inner.tombstones.extend(slots.iter().map(|s| s.0));
        }
    }

    fn search(
        &self,
        query: &[f32],
        k: usize,
        filter: Option<&(dyn Fn(Slot) -> bool + Sync)>,
    ) -> Result<Vec<(Slot, f32)>> {
        check_dims(self.dim, [query])?;
        let inner = self.read()?;
        if inner.points() == 0 || k == 0 {
            return Ok(Vec::new());
        }
        let tombstones = &inner.tombstones;
        let keep = |slot: Slot| !tombstones.contains(&slot.0) && filter.is_none_or(|f| f(slot));
        let mut hits = Vec::new();
        if let Some(segment) = &inner.segment {
            let (found, whole) = self.segment_hits(segment, query, k, &keep)?;
            if whole {
                return Ok(super::top_k(found, k));
            }
            hits = found;
        }
        let graph_points = inner.graph.get_nb_point();
        if graph_points > 0 && graph_points <= SCAN_BELOW {
            // A small graph is scanned: faster than searching it below a
            // few thousand vectors, and it reaches every point, which a
            // graph built by parallel inserts may not.
            let points = self.points(&inner)?;
            hits.extend(points.iter().enumerate().filter_map(|(at, point)| {
                let slot = Slot(at as u64);
                let point = point.as_ref().filter(|_| keep(slot))?;
                Some((slot, dot(query, point.get_v())))
            }));
        } else if graph_points > 0 {
            let keep_id = |id: &usize| keep(Slot(*id as u64));
            let ef = self.config.ef_search.max(k);
            let found = inner.graph.search_filter(query, k, ef, Some(&keep_id));
            hits.extend(
                found
                    .into_iter()
                    .map(|n| (Slot(n.d_id as u64), 1.0 - n.distance)),
            );
        }
        Ok(super::top_k(hits, k))
    }

    fn search_among(&self, query: &[f32], k: usize, slots: &SlotSet) -> Result<Vec<(Slot, f32)>> {
        check_dims(self.dim, [query])?;
        let inner = self.read()?;
        let live = || {
            slots
                .iter()
                .filter(|slot| !inner.tombstones.contains(&slot.0))
        };
        let points = self.points(&inner)?;
        let mut scored: Vec<(Slot, f32)> = live()
            .filter_map(|slot| {
                let point = points.get(slot.0 as usize)?.as_ref()?;
                Some((slot, dot(query, point.get_v())))
            })
            .collect();
        if let Some(segment) = inner.sound_segment() {
            match segment.score_slots(query, live()) {
                Ok(approx) => {
                    let approx = super::top_k(approx, self.rescored(k));
                    scored.extend(self.rescore(query, approx)?);
                }
                Err(e) if segment.is_damaged() => {
                    tracing::error!(error = %e, "vector segment damaged: searching exactly until it is rebuilt");
                    let keep =
                        |slot: Slot| slots.contains(slot) && !inner.tombstones.contains(&slot.0);
                    return Ok(super::top_k(
                        super::score_source(self.source.as_ref(), query, &keep)?,
                        k,
                    ));
                }
                Err(e) => return Err(e),
            }
        } else if inner.segment.is_some() {
            let keep = |slot: Slot| slots.contains(slot) && !inner.tombstones.contains(&slot.0);
            return Ok(super::top_k(
                super::score_source(self.source.as_ref(), query, &keep)?,
                k,
            ));
        }
        Ok(super::top_k(scored, k))
    }

    fn len(&self) -> u64 {
        self.read()
            .map(|i| (i.points() as u64).saturating_sub(i.tombstones.len() as u64))
            .unwrap_or(0)
    }

    fn restore_tombstones(&self, slots: &[Slot]) -> Result<Vec<Slot>> {
        let mut inner = self.write()?;
        // hnsw_rs's point iterator panics on a graph without points.
        let mut present: HashSet<u64> = if slots.is_empty() || inner.graph.get_nb_point() == 0 {
            HashSet::new()
        } else {
            inner
                .graph
                .get_point_indexation()
                .into_iter()
                .map(|p| p.get_origin_id() as u64)
                .collect()
        };
        if let Some(segment) = inner.segment.as_ref().filter(|_| !slots.is_empty()) {
            for slot in slots {
                if segment.node(*slot)?.is_some() {
                    present.insert(slot.0);
                }
            }
        }
        let (held, absent): (Vec<Slot>, Vec<Slot>) =
            slots.iter().partition(|s| present.contains(&s.0));
        inner.tombstones = held.iter().map(|s| s.0).collect();
        Ok(absent)
    }

    fn tombstone_count(&self) -> u64 {
        self.read().map(|i| i.tombstones.len() as u64).unwrap_or(0)
    }

    fn unmerged(&self) -> u64 {
        self.read().map_or(0, |i| i.graph.get_nb_point() as u64)
    }

    fn damaged(&self) -> bool {
        self.read()
            .is_ok_and(|i| i.segment.as_ref().is_some_and(|s| s.is_damaged()))
    }

    fn persist(&self, watermark: Slot) -> Result<()> {
        let mut inner = self.write()?;
        let generation = inner.generation + 1;
        let target = generation_dir(&self.dir, generation);
        let tmp = target.with_extension("tmp");
        for stale in [&tmp, &target] {
            if stale.exists() {
                std::fs::remove_dir_all(stale).map_err(|e| Error::io(stale, e))?;
            }
        }
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let points = inner.graph.get_nb_point();
        if points > 0 {
            // A graph with mapped vectors never overwrites: hnsw_rs would
            // pick another name if the files existed (in a fresh tmp dir
            // they never do).
            let name = inner.graph.file_dump(&tmp, BASENAME).map_err(err)?;
            if name != BASENAME {
                return Err(err(format!("the graph was dumped as {name}")));
            }
        }
        let segment = inner.segment.as_ref().map(|s| SegmentRef {
            name: s
                .path()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            bytes: s.file_bytes(),
        });
        let mut meta = Meta {
            watermark: watermark.0,
            points,
            dim: self.dim,
            owner: Some(self.owner.clone()),
            files: file_sums(&tmp)?,
            sum: String::new(),
            format: FORMAT,
            segment,
        };
        meta.sum = meta.digest()?;
        let meta_path = tmp.join(META);
        std::fs::write(&meta_path, serde_json::to_vec(&meta).map_err(err)?)
            .map_err(|e| Error::io(&meta_path, e))?;
        sync_files(&tmp)?;
        std::fs::rename(&tmp, &target).map_err(|e| Error::io(&target, e))?;
        sync_dir(&self.dir)?;
        inner.generation = generation;
        let keep = meta.segment.as_ref().map(|s| s.name.as_str());
        remove_older_generations(&self.dir, generation, Segments::OlderThan(keep));
        Ok(())
    }

    fn rebuild(&self, items: &[(Slot, Vec<f32>)]) -> Result<()> {
        self.check_items(items)?;
        // A merge still building is superseded: its thread finishes on its
        // own and its file, named by no generation, is deleted later.
        self.merging()?.take();
        let graph = build_graph(&self.config, items);
        let segment = if items.is_empty() {
            None
        } else {
            Some(std::sync::Arc::new(self.write_segment(&graph)?))
        };
        drop(graph);
        let mut inner = self.write()?;
        inner.segment = segment;
        inner.graph = new_graph(&self.config, 0);
        inner.tombstones.clear();
        self.forget_points();
        Ok(())
    }

    fn merge(&self, all: &dyn Fn() -> Result<Vec<(Slot, Vec<f32>)>>) -> Result<()> {
        let whole_graph = self
            .read()
            .map(|i| i.segment.is_none() && i.tombstones.is_empty())?;
        if whole_graph {
            self.compact_graph()
        } else if self.config.background_merge {
            self.merge_in_background(all)
        } else {
            self.rebuild(&all()?)
        }
    }

    fn settle(&self) -> Result<Vec<Slot>> {
        let finished = {
            let mut merging = self.merging()?;
            match merging.as_ref() {
                Some(m) if m.handle.is_finished() => merging.take(),
                _ => None,
            }
        };
        let Some(Merging { upto, handle }) = finished else {
            return Ok(Vec::new());
        };
        let segment = handle
            .join()
            .map_err(|_| err("the merge thread panicked"))??;
        tracing::info!(points = segment.len(), "a background merge finished");
        self.swap_in(segment, upto)
    }

    fn merge_finished(&self) -> bool {
        self.merging()
            .is_ok_and(|m| m.as_ref().is_some_and(|m| m.handle.is_finished()))
    }
}

/// Which segment files a clean-up deletes besides the generations.
#[derive(Debug, Clone, Copy)]
enum Segments<'a> {
    /// Every one but this (on open: nothing is being written yet).
    AllBut(Option<&'a str>),
    /// Those older than this one (after a dump: a merge in the background
    /// may be writing a newer one that no generation names yet).
    OlderThan(Option<&'a str>),
}

impl Segments<'_> {
    fn stale(&self, name: &str) -> bool {
        match *self {
            Segments::AllBut(keep) => Some(name) != keep,
            // Names carry a fixed-width creation stamp: they sort by age.
            Segments::OlderThan(keep) => keep.is_some_and(|k| name < k),
        }
    }
}

/// Deletes every dump but `keep` (older ones and half-written ones) and
/// the segment files `segments` says; failures only cost disk space, so
/// they are logged.
fn remove_older_generations(dir: &Path, keep: u64, segments: Segments) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let stale = if let Some(rest) = name.strip_prefix("gen-") {
            let number = rest.trim_end_matches(".tmp");
            number != rest || number.parse::<u64>().is_ok_and(|g| g != keep)
        } else {
            name.starts_with("segment-") && segments.stale(name)
        };
        if !stale {
            continue;
        }
        let path = entry.path();
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if let Err(e) = removed {
            tracing::warn!(path = %path.display(), error = %e, "could not remove old vector dump");
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::flat::FlatVectorIndex;
    use crate::store::flat::conformance::unit;
    use std::sync::Arc;

    pub(crate) fn owner() -> Owner {
        Owner {
            id: "test".into(),
            adopt_unowned: true,
        }
    }

    /// The vectors `unit(i, dim)` for `i < n`, as an exact source.
    pub(crate) fn source(n: u64, dim: usize) -> Arc<FlatVectorIndex> {
        let source = FlatVectorIndex::new(dim);
        let items: Vec<_> = (0..n).map(|i| (Slot(i), unit(i, dim))).collect();
        source.insert(&items).unwrap();
        Arc::new(source)
    }

    /// An index in `dir` whose source holds `unit(i, dim)` for `i < n`.
    pub(crate) fn open(dir: &Path, dim: usize, n: u64) -> (HnswVectorIndex, Slot) {
        HnswVectorIndex::open(dir, dim, &HnswConfig::default(), &owner(), source(n, dim)).unwrap()
    }

    fn persisted(dir: &Path) -> PathBuf {
        let (index, _) = open(dir, 8, 300);
        let items: Vec<_> = (0..300).map(|i| (Slot(i), unit(i, 8))).collect();
        index.insert(&items).unwrap();
        index.persist(Slot(300)).unwrap();
        generation_dir(dir, 1)
    }

    #[test]
    fn damaged_dumps_are_refused_before_hnsw_rs_reads_them() {
        // Each of these made hnsw_rs exit the process, abort, or panic.
        type Damage = fn(&Path);
        let damage: [(&str, Damage); 4] = [
            ("truncated data", |p| truncate(p, "graph.hnsw.data")),
            ("truncated graph", |p| truncate(p, "graph.hnsw.graph")),
            ("huge length field", |p| {
                overwrite(p, "graph.hnsw.data", 16, &[0xff; 8])
            }),
            ("flipped byte", |p| {
                overwrite(p, "graph.hnsw.graph", 40, &[0x5a])
            }),
        ];
        for (what, damage) in damage {
            let dir = tempfile::tempdir().unwrap();
            let gen_dir = persisted(dir.path());
            damage(&gen_dir);
            let opened = HnswVectorIndex::open(
                dir.path(),
                8,
                &HnswConfig::default(),
                &owner(),
                source(0, 8),
            );
            let error = opened.err().unwrap_or_else(|| panic!("{what}: opened"));
            assert!(error.to_string().contains("checksums"), "{what}: {error}");
        }
    }

    #[test]
    fn a_graph_of_another_doc_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        persisted(dir.path());
        let other = Owner {
            id: "other".into(),
            adopt_unowned: true,
        };
        let opened =
            HnswVectorIndex::open(dir.path(), 8, &HnswConfig::default(), &other, source(0, 8));
        assert!(opened.is_err());
    }

    fn truncate(gen_dir: &Path, name: &str) {
        let path = gen_dir.join(name);
        let len = std::fs::metadata(&path).unwrap().len();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len / 2).unwrap();
    }

    fn overwrite(gen_dir: &Path, name: &str, at: usize, bytes: &[u8]) {
        let path = gen_dir.join(name);
        let mut data = std::fs::read(&path).unwrap();
        data[at..at + bytes.len()].copy_from_slice(bytes);
        std::fs::write(&path, data).unwrap();
    }

    #[test]
    fn an_empty_graph_takes_tombstones_and_searches_without_panicking() {
        // A kill after a remove of everything: the doc store holds
        // tombstones, the graph holds no point (hnsw_rs's iterator panics).
        let dir = tempfile::tempdir().unwrap();
        let (index, _) = open(dir.path(), 8, 300);
        assert_eq!(index.restore_tombstones(&[Slot(3)]).unwrap(), vec![Slot(3)]);
        assert!(index.search(&unit(1, 8), 5, None).unwrap().is_empty());
        assert_eq!(index.len(), 0);
    }

    #[test]
    fn removed_slots_never_appear_and_k_is_still_filled() {
        let dir = tempfile::tempdir().unwrap();
        let (index, _) = open(dir.path(), 8, 300);
        let items: Vec<_> = (0..200).map(|i| (Slot(i), unit(i, 8))).collect();
        index.insert(&items).unwrap();
        index.remove(&[Slot(5)]);
        let hits = index.search(&unit(5, 8), 10, None).unwrap();
        assert_eq!(hits.len(), 10);
        assert!(hits.iter().all(|(s, _)| *s != Slot(5)));
        assert_eq!(index.len(), 199);
    }

    #[test]
    fn persisted_graph_reloads_with_its_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let (index, watermark) = open(dir.path(), 8, 300);
        assert_eq!(watermark, Slot(0));
        let items: Vec<_> = (0..50).map(|i| (Slot(i), unit(i, 8))).collect();
        index.insert(&items).unwrap();
        index.persist(Slot(50)).unwrap();
        index.persist(Slot(50)).unwrap();
        drop(index);
        let (index, watermark) = open(dir.path(), 8, 300);
        assert_eq!(watermark, Slot(50));
        assert_eq!(index.len(), 50);
        let hits = index.search(&unit(7, 8), 1, None).unwrap();
        assert_eq!(hits[0].0, Slot(7));
        // Only the newest generation is kept.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn half_written_dump_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("gen-00000007.tmp")).unwrap();
        std::fs::create_dir_all(dir.path().join("gen-00000009")).unwrap();
        let (index, watermark) = open(dir.path(), 8, 300);
        assert_eq!(watermark, Slot(0));
        assert!(index.is_empty());
    }
}

#[cfg(test)]
mod segment_tests {
    use super::tests::{open, owner, source};
    use super::*;
    use crate::store::flat::FlatVectorIndex;
    use crate::store::flat::conformance::unit;

    fn items(n: u64, dim: usize) -> Vec<(Slot, Vec<f32>)> {
        (0..n).map(|i| (Slot(i), unit(i, dim))).collect()
    }

    /// Recall@10 of `index` against an exact scan, over 40 queries.
    fn recall(index: &dyn VectorIndex, n: u64, dim: usize) -> f64 {
        let exact = FlatVectorIndex::new(dim);
        exact.insert(&items(n, dim)).unwrap();
        let mut found = 0;
        for q in 0..40 {
            let query = unit(1_000_000 + q, dim);
            let truth = exact.search(&query, 10, None).unwrap();
            let hits = index.search(&query, 10, None).unwrap();
            found += truth
                .iter()
                .filter(|t| hits.iter().any(|h| h.0 == t.0))
                .count();
        }
        found as f64 / 400.0
    }

    #[test]
    fn the_segment_recalls_as_well_as_the_graph_it_was_built_from() {
        let (n, dim) = (4000, 48);
        let graph_dir = tempfile::tempdir().unwrap();
        let (graph, _) = open(graph_dir.path(), dim, n);
        graph.insert(&items(n, dim)).unwrap();
        let segment_dir = tempfile::tempdir().unwrap();
        let (segment, _) = open(segment_dir.path(), dim, n);
        segment.rebuild(&items(n, dim)).unwrap();
        assert_eq!((segment.unmerged(), segment.len()), (0, n));
        let (from_graph, from_segment) = (recall(&graph, n, dim), recall(&segment, n, dim));
        eprintln!("recall@10: graph {from_graph}, segment {from_segment}");
        assert!(from_segment >= 0.95, "segment recall {from_segment}");
        assert!(
            from_segment >= from_graph - 0.02,
            "{from_segment} vs {from_graph}"
        );
        // Scores are exact (rescored), not int8 approximations.
        let hit = segment.search(&unit(17, dim), 1, None).unwrap()[0];
        assert_eq!(hit.0, Slot(17));
        assert!((hit.1 - 1.0).abs() < 1e-5, "{}", hit.1);
    }

    #[test]
    fn writes_after_a_merge_are_searched_with_the_segment_and_survive_reopening() {
        let dim = 16;
        let dir = tempfile::tempdir().unwrap();
        let (index, _) = open(dir.path(), dim, 400);
        index.insert(&items(300, dim)).unwrap();
        index.merge(&|| Ok(items(300, dim))).unwrap();
        let written: Vec<_> = (300..400).map(|i| (Slot(i), unit(i, dim))).collect();
        index.insert(&written).unwrap();
        index.remove(&[Slot(5), Slot(350)]);
        assert_eq!((index.unmerged(), index.len()), (100, 398));
        index.persist(Slot(400)).unwrap();
        drop(index);
        let (index, watermark) = open(dir.path(), dim, 400);
        assert_eq!(watermark, Slot(400));
        assert_eq!(
            index.restore_tombstones(&[Slot(5), Slot(350)]).unwrap(),
            vec![]
        );
        assert_eq!(index.len(), 398);
        for slot in [7, 377] {
            assert_eq!(
                index.search(&unit(slot, dim), 1, None).unwrap()[0].0,
                Slot(slot)
            );
        }
        for gone in [5, 350] {
            let hits = index.search(&unit(gone, dim), 10, None).unwrap();
            assert_eq!(hits.len(), 10);
            assert!(hits.iter().all(|h| h.0 != Slot(gone)));
        }
        let few: SlotSet = [Slot(5), Slot(8), Slot(350), Slot(351)]
            .into_iter()
            .collect();
        let among = index.search_among(&unit(8, dim), 5, &few).unwrap();
        let slots: Vec<Slot> = among.iter().map(|h| h.0).collect();
        assert_eq!(slots.len(), 2);
        assert!(slots.contains(&Slot(8)) && slots.contains(&Slot(351)));
        // A merge with a segment in place builds a new one from everything.
        let live: Vec<_> = items(400, dim)
            .into_iter()
            .filter(|(s, _)| ![5, 350].contains(&s.0))
            .collect();
        index.rebuild(&live).unwrap();
        index.persist(Slot(400)).unwrap();
        let segments = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("segment-")
            })
            .count();
        assert_eq!(segments, 1, "the old segment file is deleted");
    }

    #[test]
    fn a_background_merge_lets_searches_and_writes_go_on_and_loses_nothing() {
        let dim = 16;
        let dir = tempfile::tempdir().unwrap();
        let config = HnswConfig {
            background_merge: true,
            ..HnswConfig::default()
        };
        let source = source(3000, dim);
        let (index, _) =
            HnswVectorIndex::open(dir.path(), dim, &config, &owner(), source.clone()).unwrap();
        index.insert(&items(1000, dim)).unwrap();
        index.merge(&|| Ok(items(1000, dim))).unwrap();
        assert_eq!(index.unmerged(), 0, "the first merge writes the graph out");
        let second: Vec<_> = (1000..2000).map(|i| (Slot(i), unit(i, dim))).collect();
        index.insert(&second).unwrap();
        index.remove(&[Slot(3)]);
        let live = || {
            Ok(items(2000, dim)
                .into_iter()
                .filter(|(s, _)| s.0 != 3)
                .collect())
        };
        index.merge(&live).unwrap();
        // While it builds: writes and removals go on, searches answer.
        let third: Vec<_> = (2000..2100).map(|i| (Slot(i), unit(i, dim))).collect();
        index.insert(&third).unwrap();
        index.remove(&[Slot(1500), Slot(2050)]);
        assert_eq!(
            index.search(&unit(1999, dim), 1, None).unwrap()[0].0,
            Slot(1999)
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !index.merge_finished() {
            assert!(
                std::time::Instant::now() < deadline,
                "the merge never finished"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let dropped = index.settle().unwrap();
        assert_eq!(
            dropped,
            vec![Slot(3)],
            "only the tombstone the new segment left out"
        );
        assert_eq!(index.unmerged(), 100, "what was written during the merge");
        assert_eq!(index.len(), 2100 - 3);
        for slot in [7, 1234, 2077] {
            assert_eq!(
                index.search(&unit(slot, dim), 1, None).unwrap()[0].0,
                Slot(slot)
            );
        }
        for gone in [3, 1500, 2050] {
            let hits = index.search(&unit(gone, dim), 10, None).unwrap();
            assert!(hits.iter().all(|h| h.0 != Slot(gone)), "{gone} came back");
        }
        index.persist(Slot(2100)).unwrap();
        drop(index);
        let (index, _) = HnswVectorIndex::open(dir.path(), dim, &config, &owner(), source).unwrap();
        assert!(
            index
                .restore_tombstones(&[Slot(1500), Slot(2050)])
                .unwrap()
                .is_empty()
        );
        assert_eq!(index.len(), 2100 - 3);
    }

    #[test]
    fn a_dump_of_the_previous_release_is_converted_once() {
        let dim = 8;
        let dir = tempfile::tempdir().unwrap();
        let (index, _) = open(dir.path(), dim, 300);
        index.insert(&items(300, dim)).unwrap();
        index.persist(Slot(300)).unwrap();
        drop(index);
        // Rewrite the record as the previous release wrote it.
        let gen_dir = generation_dir(dir.path(), 1);
        let mut meta = read_meta(&gen_dir).unwrap();
        meta.format = 0;
        meta.sum = meta.digest().unwrap();
        let json = serde_json::to_string(&meta).unwrap();
        assert!(
            !json.contains("format") && !json.contains("segment"),
            "{json}"
        );
        std::fs::write(gen_dir.join(META), json).unwrap();
        let (index, watermark) = open(dir.path(), dim, 300);
        assert_eq!(
            (watermark, index.len(), index.unmerged()),
            (Slot(300), 300, 0)
        );
        assert_eq!(
            index.search(&unit(42, dim), 1, None).unwrap()[0].0,
            Slot(42)
        );
        drop(index);
        let meta = read_meta(&generation_dir(dir.path(), 2)).unwrap();
        assert_eq!((meta.format, meta.points), (FORMAT, 0));
        assert!(meta.segment.is_some());
    }

    #[test]
    fn a_generation_naming_a_segment_outside_its_folder_or_of_another_length_is_refused() {
        let dim = 8;
        let dir = tempfile::tempdir().unwrap();
        let (index, _) = open(dir.path(), dim, 300);
        index.rebuild(&items(300, dim)).unwrap();
        index.persist(Slot(300)).unwrap();
        drop(index);
        let gen_dir = generation_dir(dir.path(), 1);
        let good = read_meta(&gen_dir).unwrap();
        let named = good.segment.clone().unwrap();
        let lies = [
            SegmentRef {
                bytes: named.bytes + 1,
                ..named.clone()
            },
            SegmentRef {
                name: "../segment-elsewhere.seg".into(),
                ..named.clone()
            },
            SegmentRef {
                name: "graph.hnsw.data".into(),
                ..named.clone()
            },
        ];
        for lie in lies {
            // A record that checks out (its sum is recomputed) but names
            // the wrong file: refused, and the index rebuilds from sled.
            let mut meta = read_meta(&gen_dir).unwrap();
            meta.segment = Some(lie.clone());
            meta.sum = meta.digest().unwrap();
            std::fs::write(gen_dir.join(META), serde_json::to_vec(&meta).unwrap()).unwrap();
            let config = HnswConfig::default();
            let opened = HnswVectorIndex::open(dir.path(), dim, &config, &owner(), source(0, dim));
            assert!(opened.is_err(), "{lie:?} was accepted");
            // A refused record deletes nothing: the named file is still there.
            assert!(dir.path().join(&named.name).exists(), "{lie:?}");
        }
    }

    #[test]
    fn a_damaged_segment_is_answered_exactly_then_rebuilt() {
        let dim = 16;
        let dir = tempfile::tempdir().unwrap();
        let segment_file = |dir: &Path| {
            std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| {
                    p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with("segment-")
                })
                .unwrap()
        };
        {
            let (index, _) = open(dir.path(), dim, 2000);
            index.rebuild(&items(2000, dim)).unwrap();
            index.persist(Slot(2000)).unwrap();
        }
        let path = segment_file(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        // A flipped byte in every block: the first search meets one.
        let blocks = bytes.len() / (64 * 1024);
        for b in 1..=blocks {
            let at = bytes.len() - b * 64 * 1024 + 7;
            if at > 4096 {
                bytes[at] ^= 0x5a;
            }
        }
        std::fs::write(&path, &bytes).unwrap();
        let (index, _) = open(dir.path(), dim, 2000);
        assert!(!index.damaged());
        let hits = index.search(&unit(1234, dim), 5, None).unwrap();
        assert_eq!(hits[0].0, Slot(1234), "answered exactly from the source");
        assert!(index.damaged());
        index.rebuild(&items(2000, dim)).unwrap();
        assert!(!index.damaged());
        index.persist(Slot(2000)).unwrap();
        drop(index);
        let (index, _) = open(dir.path(), dim, 2000);
        assert_eq!(
            index.search(&unit(99, dim), 1, None).unwrap()[0].0,
            Slot(99)
        );
        assert!(!index.damaged());
        // Truncated or with a huge length: refused at open (the index then
        // rebuilds from the doc store).
        let path = segment_file(dir.path());
        let bytes = std::fs::read(&path).unwrap();
        let mut huge = bytes.clone();
        huge[40..48].copy_from_slice(&(1u64 << 50).to_le_bytes());
        for damaged in [&bytes[..bytes.len() - 10], &huge[..]] {
            std::fs::write(&path, damaged).unwrap();
            let config = HnswConfig::default();
            let opened = HnswVectorIndex::open(dir.path(), dim, &config, &owner(), source(0, dim));
            assert!(opened.is_err());
        }
    }
}

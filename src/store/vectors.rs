//! The hnsw_rs-backed [`VectorIndex`]. hnsw_rs cannot delete, so removed
//! slots are tombstones filtered inside the search (results still fill `k`)
//! and the graph is rebuilt when they pass a threshold.
//!
//! Persistence: each dump goes to `gen-N.tmp/` (graph, data, then
//! `meta.json` with the watermark), is fsynced and renamed to `gen-N/`; the
//! newest complete generation wins on open and older ones are deleted. A
//! crash mid-dump leaves the previous generation intact.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use hnsw_rs::api::AnnT;
use hnsw_rs::hnswio::HnswIo;
use hnsw_rs::prelude::{Distance, Hnsw};
use serde::{Deserialize, Serialize};

use super::{Owner, SlotSet, VectorIndex, check_dims};
use crate::config::HnswConfig;
use crate::error::{Error, Result};
use crate::kernels::dot;
use crate::types::Slot;

const BASENAME: &str = "graph";
const META: &str = "meta.json";
const MAX_LAYERS: usize = 16;

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
}

impl Meta {
    fn digest(&self) -> Result<String> {
        let unsummed = Meta {
            sum: String::new(),
            files: self.files.iter().map(FileSum::clone).collect(),
            owner: self.owner.clone(),
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
    graph: Graph,
    tombstones: HashSet<u64>,
    generation: u64,
}

/// The graph's points, indexed by slot.
type PointTable = Vec<Option<std::sync::Arc<hnsw_rs::hnsw::Point<'static, f32>>>>;

/// hnsw_rs-backed vector index.
pub struct HnswVectorIndex {
    dir: PathBuf,
    dim: usize,
    owner: String,
    config: HnswConfig,
    inner: RwLock<Inner>,
    /// Built for exact search among a few slots, valid for the number of
    /// changes it was built at (a table built while an insert ran is never
    /// reused after it).
    points: RwLock<Option<(u64, std::sync::Arc<PointTable>)>>,
    /// Bumped after every insert and rebuild.
    changes: std::sync::atomic::AtomicU64,
}

fn err(e: impl std::fmt::Display) -> Error {
    Error::store("vectors", e)
}

impl HnswVectorIndex {
    /// Opens the newest complete dump in `dir` (or an empty graph). Returns
    /// the index and the dump's watermark: live slots at or above it must be
    /// inserted again. A dump that fails to load, fails its checksums or
    /// belongs to another doc store is reported as an error so the caller
    /// can rebuild from the doc store.
    pub fn open(
        dir: &Path,
        dim: usize,
        config: &HnswConfig,
        owner: &Owner,
    ) -> Result<(Self, Slot)> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let (generation, graph, watermark) = match latest_generation(dir)? {
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
                (generation, graph, meta.watermark)
            }
            None => (0, new_graph(config, 0), 0),
        };
        let index = HnswVectorIndex {
            dir: dir.to_path_buf(),
            dim,
            owner: owner.id.clone(),
            config: config.clone(),
            inner: RwLock::new(Inner {
                graph,
                tombstones: HashSet::new(),
                generation,
            }),
            points: RwLock::new(None),
            changes: std::sync::atomic::AtomicU64::new(0),
        };
        Ok((index, Slot(watermark)))
    }

    /// A fresh, empty index in `dir`, discarding whatever dumps were there.
    pub fn create_empty(
        dir: &Path,
        dim: usize,
        config: &HnswConfig,
        owner: &Owner,
    ) -> Result<Self> {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        Ok(Self::open(dir, dim, config, owner)?.0)
    }

    fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, Inner>> {
        self.inner.read().map_err(|_| err("lock poisoned"))
    }

    fn write(&self) -> Result<std::sync::RwLockWriteGuard<'_, Inner>> {
        self.inner.write().map_err(|_| err("lock poisoned"))
    }

    /// The graph's points by slot, built on the first call after a change
    /// (one pass over the graph; the vectors are not copied).
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
        if inner.graph.get_nb_point() == 0 || k == 0 {
            return Ok(Vec::new());
        }
        let tombstones = &inner.tombstones;
        let keep = |id: &usize| {
            !tombstones.contains(&(*id as u64)) && filter.is_none_or(|f| f(Slot(*id as u64)))
        };
        let ef = self.config.ef_search.max(k);
        let hits = inner.graph.search_filter(query, k, ef, Some(&keep));
        Ok(hits
            .into_iter()
            .map(|n| (Slot(n.d_id as u64), 1.0 - n.distance))
            .collect())
    }

    fn search_among(&self, query: &[f32], k: usize, slots: &SlotSet) -> Result<Vec<(Slot, f32)>> {
        check_dims(self.dim, [query])?;
        let inner = self.read()?;
        let points = self.points(&inner)?;
        let scored = slots
            .iter()
            .filter(|slot| !inner.tombstones.contains(&slot.0))
            .filter_map(|slot| {
                let point = points.get(slot.0 as usize)?.as_ref()?;
                Some((slot, dot(query, point.get_v())))
            })
            .collect();
        Ok(super::top_k(scored, k))
    }

    fn len(&self) -> u64 {
        self.read()
            .map(|i| (i.graph.get_nb_point() as u64).saturating_sub(i.tombstones.len() as u64))
            .unwrap_or(0)
    }

    fn restore_tombstones(&self, slots: &[Slot]) -> Result<Vec<Slot>> {
        let mut inner = self.write()?;
        // hnsw_rs's point iterator panics on a graph without points.
        let present: HashSet<u64> = if slots.is_empty() || inner.graph.get_nb_point() == 0 {
            HashSet::new()
        } else {
            inner
                .graph
                .get_point_indexation()
                .into_iter()
                .map(|p| p.get_origin_id() as u64)
                .collect()
        };
        let (held, absent): (Vec<Slot>, Vec<Slot>) =
            slots.iter().partition(|s| present.contains(&s.0));
        inner.tombstones = held.iter().map(|s| s.0).collect();
        Ok(absent)
    }

    fn tombstone_count(&self) -> u64 {
        self.read().map(|i| i.tombstones.len() as u64).unwrap_or(0)
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
        let mut meta = Meta {
            watermark: watermark.0,
            points,
            dim: self.dim,
            owner: Some(self.owner.clone()),
            files: file_sums(&tmp)?,
            sum: String::new(),
        };
        meta.sum = meta.digest()?;
        let meta_path = tmp.join(META);
        std::fs::write(&meta_path, serde_json::to_vec(&meta).map_err(err)?)
            .map_err(|e| Error::io(&meta_path, e))?;
        sync_files(&tmp)?;
        std::fs::rename(&tmp, &target).map_err(|e| Error::io(&target, e))?;
        sync_dir(&self.dir)?;
        inner.generation = generation;
        remove_older_generations(&self.dir, generation);
        Ok(())
    }

    fn rebuild(&self, items: &[(Slot, Vec<f32>)]) -> Result<()> {
        self.check_items(items)?;
        let graph = new_graph(&self.config, items.len());
        let data: Vec<(&[f32], usize)> = items
            .iter()
            .map(|(s, v)| (v.as_slice(), s.0 as usize))
            .collect();
        graph.parallel_insert_slice(&data);
        let mut inner = self.write()?;
        inner.graph = graph;
        inner.tombstones.clear();
        self.forget_points();
        Ok(())
    }
}

/// Deletes every dump but `keep` (older ones and half-written ones); failures
/// only cost disk space, so they are logged.
fn remove_older_generations(dir: &Path, keep: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("gen-")) else {
            continue;
        };
        let number = rest.trim_end_matches(".tmp");
        if (number != rest || number.parse::<u64>().is_ok_and(|g| g != keep))
            && let Err(e) = std::fs::remove_dir_all(entry.path())
        {
            tracing::warn!(path = %entry.path().display(), error = %e, "could not remove old vector dump");
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::flat::conformance::unit;

    pub(crate) fn owner() -> Owner {
        Owner {
            id: "test".into(),
            adopt_unowned: true,
        }
    }

    fn persisted(dir: &Path) -> PathBuf {
        let (index, _) = HnswVectorIndex::open(dir, 8, &HnswConfig::default(), &owner()).unwrap();
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
            let opened = HnswVectorIndex::open(dir.path(), 8, &HnswConfig::default(), &owner());
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
        assert!(HnswVectorIndex::open(dir.path(), 8, &HnswConfig::default(), &other).is_err());
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
        let (index, _) =
            HnswVectorIndex::open(dir.path(), 8, &HnswConfig::default(), &owner()).unwrap();
        assert_eq!(index.restore_tombstones(&[Slot(3)]).unwrap(), vec![Slot(3)]);
        assert!(index.search(&unit(1, 8), 5, None).unwrap().is_empty());
        assert_eq!(index.len(), 0);
    }

    #[test]
    fn removed_slots_never_appear_and_k_is_still_filled() {
        let dir = tempfile::tempdir().unwrap();
        let (index, _) =
            HnswVectorIndex::open(dir.path(), 8, &HnswConfig::default(), &owner()).unwrap();
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
        let (index, watermark) =
            HnswVectorIndex::open(dir.path(), 8, &HnswConfig::default(), &owner()).unwrap();
        assert_eq!(watermark, Slot(0));
        let items: Vec<_> = (0..50).map(|i| (Slot(i), unit(i, 8))).collect();
        index.insert(&items).unwrap();
        index.persist(Slot(50)).unwrap();
        index.persist(Slot(50)).unwrap();
        drop(index);
        let (index, watermark) =
            HnswVectorIndex::open(dir.path(), 8, &HnswConfig::default(), &owner()).unwrap();
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
        let (index, watermark) =
            HnswVectorIndex::open(dir.path(), 8, &HnswConfig::default(), &owner()).unwrap();
        assert_eq!(watermark, Slot(0));
        assert!(index.is_empty());
    }
}

//! The compact graph segment: a read-only HNSW graph that hnsw_rs builds but
//! does not hold. Its layers are CSR neighbour lists (u32), its vectors int8
//! with one scale per vector, and the file is memory-mapped, so opening is
//! mapping and a few header checks, not parsing.
//!
//! File layout (little-endian): a 64-byte header, the layer directory
//! (points and links per layer), a CRC-32 per 64 KiB block of the body,
//! then the body: slots (u64, increasing), scales (f32), vectors (i8),
//! and per layer the nodes it holds (upper layers only, u32, increasing),
//! the CSR offsets (u32) and the links (u32 node numbers).
//!
//! The header holds a CRC of itself, the directory and the block table, and
//! the file's length must be exactly what they describe: a truncated file or
//! a huge length is refused at open. Body blocks are checked the first time a
//! search touches them (one bit per block remembers it), so opening never
//! reads the whole file, and a damaged block is reported, never used. Every
//! read is bounds-checked: a file that passes its checksums but lies (a link
//! past the end) is skipped over, never read out of bounds.

use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hnsw_rs::prelude::{Distance, Hnsw};

use crate::error::{Error, Result};
use crate::types::Slot;

const MAGIC: &[u8; 8] = b"LORESEG1";
const HEADER: usize = 64;
const BLOCK: usize = 64 * 1024;
/// hnsw_rs never makes more.
const MAX_LAYERS: usize = 16;

fn err(e: impl std::fmt::Display) -> Error {
    Error::store("vectors", e)
}

/// Where one layer's sections start, and their sizes.
#[derive(Debug, Clone)]
struct Layer {
    /// Points in the layer.
    points: usize,
    /// Links in the layer.
    links: usize,
    /// Sorted node numbers (upper layers; layer 0 holds every node).
    nodes_at: Option<usize>,
    offsets_at: usize,
    links_at: usize,
}

/// The sizes a header declares, from which every section's place follows.
#[derive(Debug, Clone, PartialEq)]
struct Shape {
    dim: usize,
    points: usize,
    entry: usize,
    /// (points, links) per layer.
    layers: Vec<(usize, usize)>,
}

/// Section offsets, relative to the start of the body.
#[derive(Debug, Clone)]
struct Layout {
    slots_at: usize,
    scales_at: usize,
    vectors_at: usize,
    layers: Vec<Layer>,
    body: usize,
}

fn pad8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

impl Shape {
    /// Section offsets, or an error when the sizes overflow.
    fn layout(&self) -> Option<Layout> {
        let n = self.points;
        let slots_at = 0;
        let scales_at = n.checked_mul(8)?;
        let vectors_at = pad8(scales_at.checked_add(n.checked_mul(4)?)?);
        let mut at = pad8(vectors_at.checked_add(n.checked_mul(self.dim)?)?);
        let mut layers = Vec::with_capacity(self.layers.len());
        for (level, &(points, links)) in self.layers.iter().enumerate() {
            let nodes_at = (level > 0).then_some(at);
            if level > 0 {
                at = pad8(at.checked_add(points.checked_mul(4)?)?);
            }
            let offsets_at = at;
            at = pad8(at.checked_add(points.checked_add(1)?.checked_mul(4)?)?);
            let links_at = at;
            at = pad8(at.checked_add(links.checked_mul(4)?)?);
            layers.push(Layer {
                points,
                links,
                nodes_at,
                offsets_at,
                links_at,
            });
        }
        Some(Layout {
            slots_at,
            scales_at,
            vectors_at,
            layers,
            body: at,
        })
    }

    /// Bytes before the body: header, layer directory, block table.
    fn prefix(&self, body: usize) -> usize {
        pad8(HEADER + self.layers.len() * 16 + body.div_ceil(BLOCK) * 4)
    }

    fn header(&self, body: usize, crc: u32) -> [u8; HEADER] {
        let mut h = [0u8; HEADER];
        h[..8].copy_from_slice(MAGIC);
        let fields = [self.dim, self.points, self.layers.len(), self.entry, body];
        for (i, v) in fields.iter().enumerate() {
            h[8 + i * 8..16 + i * 8].copy_from_slice(&(*v as u64).to_le_bytes());
        }
        h[48..52].copy_from_slice(&crc.to_le_bytes());
        h
    }

    fn directory(&self) -> Vec<u8> {
        self.layers
            .iter()
            .flat_map(|&(p, l)| [(p as u64).to_le_bytes(), (l as u64).to_le_bytes()])
            .flatten()
            .collect()
    }
}

/// CRC of the header (with its CRC field zeroed), directory and block table.
fn header_crc(header: &[u8], rest: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&header[..48]);
    h.update(&header[52..]);
    h.update(rest);
    h.finalize()
}

/// Scales `v` to int8: `v ≈ scale · q`.
pub fn quantize(v: &[f32]) -> (Vec<i8>, f32) {
    let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
    let q = v
        .iter()
        .map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (q, scale)
}

/// Dot product of int8 vectors in 32 i32 lanes (the compiler widens and
/// multiplies 16 pairs per AVX2 instruction).
#[inline]
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let mut acc = [0i32; 32];
    let (ca, cb) = (a.chunks_exact(32), b.chunks_exact(32));
    let tail: i32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..32 {
            acc[i] += i32::from(i16::from(x[i]) * i16::from(y[i]));
        }
    }
    acc.iter().sum::<i32>() + tail
}

/// A query in the segment's int8 space.
struct Query {
    q: Vec<i8>,
    scale: f32,
}

/// A memory-mapped compact segment.
pub struct Segment {
    path: PathBuf,
    map: memmap2::Mmap,
    shape: Shape,
    layout: Layout,
    /// Where the body starts in the file.
    body_at: usize,
    /// Where the block table starts in the file.
    sums_at: usize,
    /// One bit per body block: its checksum was verified.
    verified: Vec<AtomicU64>,
    damaged: AtomicBool,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("path", &self.path)
            .field("points", &self.shape.points)
            .finish()
    }
}

impl Segment {
    /// Maps `path` and checks its header, directory, block table and
    /// length; the body is checked block by block as it is read.
    pub fn open(path: &Path) -> Result<Segment> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: segment files are written once and never modified in
        // place (a new one is written beside it); every read below is
        // bounds-checked against the mapping's length.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let bad = |what: &str| err(format!("segment {}: {what}", path.display()));
        if map.len() < HEADER || &map[..8] != MAGIC {
            return Err(bad("not a segment file"));
        }
        let field = |i: usize| {
            u64::from_le_bytes(map[8 + i * 8..16 + i * 8].try_into().unwrap_or_default())
        };
        let [dim, points, layers, entry, body] = [0, 1, 2, 3, 4].map(field);
        if layers == 0 || layers > MAX_LAYERS as u64 || points == 0 || entry >= points {
            return Err(bad("impossible header"));
        }
        let (dim, points, layers, entry, body) = (
            usize::try_from(dim).map_err(|_| bad("dimension"))?,
            usize::try_from(points).map_err(|_| bad("points"))?,
            layers as usize,
            entry as usize,
            usize::try_from(body).map_err(|_| bad("body length"))?,
        );
        let dir_end = HEADER + layers * 16;
        if map.len() < dir_end {
            return Err(bad("truncated"));
        }
        let read = |at: usize| u64::from_le_bytes(map[at..at + 8].try_into().unwrap_or_default());
        let shape = Shape {
            dim,
            points,
            entry,
            layers: (0..layers)
                .map(|l| {
                    let at = HEADER + l * 16;
                    (read(at) as usize, read(at + 8) as usize)
                })
                .collect(),
        };
        let layout = shape.layout().ok_or_else(|| bad("sizes overflow"))?;
        let prefix = shape.prefix(body);
        if layout.body != body || prefix.checked_add(body) != Some(map.len()) {
            return Err(bad(
                "length does not match its header (truncated or damaged)",
            ));
        }
        if shape.layers[0].0 != points || shape.layers.iter().any(|&(p, _)| p > points) {
            return Err(bad("layer sizes"));
        }
        let sums_at = dir_end;
        let stored = u32::from_le_bytes(map[48..52].try_into().unwrap_or_default());
        if header_crc(
            &map[..HEADER],
            &map[HEADER..sums_at + body.div_ceil(BLOCK) * 4],
        ) != stored
        {
            return Err(bad("header does not match its checksum"));
        }
        let blocks = body.div_ceil(BLOCK);
        Ok(Segment {
            path: path.to_path_buf(),
            map,
            shape,
            layout,
            body_at: prefix,
            sums_at,
            verified: (0..blocks.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            damaged: AtomicBool::new(false),
        })
    }

    /// Points in the segment.
    pub fn len(&self) -> usize {
        self.shape.points
    }

    /// True when the segment has no point (never written so).
    pub fn is_empty(&self) -> bool {
        self.shape.points == 0
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.shape.dim
    }

    /// Length of the file.
    pub fn file_bytes(&self) -> u64 {
        self.map.len() as u64
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True once a block failed its checksum.
    pub fn is_damaged(&self) -> bool {
        self.damaged.load(Ordering::Relaxed)
    }

    /// `len` bytes of the body at `at`, each block they span verified.
    fn bytes(&self, at: usize, len: usize) -> Result<&[u8]> {
        let end = at
            .checked_add(len)
            .filter(|&e| e <= self.layout.body)
            .ok_or_else(|| {
                err(format!(
                    "segment {}: read past the end",
                    self.path.display()
                ))
            })?;
        if len > 0 {
            for block in at / BLOCK..=(end - 1) / BLOCK {
                self.verify(block)?;
            }
        }
        Ok(&self.map[self.body_at + at..self.body_at + end])
    }

    fn verify(&self, block: usize) -> Result<()> {
        let (word, bit) = (block / 64, 1u64 << (block % 64));
        if self.verified[word].load(Ordering::Relaxed) & bit != 0 {
            return Ok(());
        }
        let start = self.body_at + block * BLOCK;
        let end = (start + BLOCK).min(self.body_at + self.layout.body);
        let at = self.sums_at + block * 4;
        let stored = u32::from_le_bytes(self.map[at..at + 4].try_into().unwrap_or_default());
        if crc32fast::hash(&self.map[start..end]) != stored {
            self.damaged.store(true, Ordering::Relaxed);
            return Err(err(format!(
                "segment {}: block {block} does not match its checksum",
                self.path.display()
            )));
        }
        self.verified[word].fetch_or(bit, Ordering::Relaxed);
        Ok(())
    }

    fn u32_at(&self, at: usize) -> Result<u32> {
        let b = self.bytes(at, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The slot of node `node`.
    pub fn slot(&self, node: usize) -> Result<Slot> {
        let b = self.bytes(self.layout.slots_at + node * 8, 8)?;
        Ok(Slot(u64::from_le_bytes(b.try_into().map_err(err)?)))
    }

    /// The node holding `slot`, if any (binary search over the slots).
    pub fn node(&self, slot: Slot) -> Result<Option<usize>> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.slot(mid)?.cmp(&slot) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(Some(mid)),
            }
        }
        Ok(None)
    }

    /// Every slot, in increasing order.
    pub fn slots(&self) -> Result<Vec<Slot>> {
        let b = self.bytes(self.layout.slots_at, self.len() * 8)?;
        Ok(b.chunks_exact(8)
            .map(|c| Slot(u64::from_le_bytes(c.try_into().unwrap_or_default())))
            .collect())
    }

    fn query(&self, v: &[f32]) -> Query {
        let (q, scale) = quantize(v);
        Query { q, scale }
    }

    /// Approximate similarity of node `node` to the query.
    fn score(&self, query: &Query, node: usize) -> Result<f32> {
        let scale = self.bytes(self.layout.scales_at + node * 4, 4)?;
        let scale = f32::from_le_bytes(scale.try_into().map_err(err)?);
        let dim = self.shape.dim;
        let v: &[i8] = bytemuck::cast_slice(self.bytes(self.layout.vectors_at + node * dim, dim)?);
        Ok(dot_i8(&query.q, v) as f32 * scale * query.scale)
    }

    /// Neighbours of `node` in `level` (empty when it is not in that layer).
    fn links(&self, level: usize, node: usize) -> Result<Vec<usize>> {
        let layer = &self.layout.layers[level];
        let position = match layer.nodes_at {
            None => node,
            Some(nodes_at) => match self.find_in_layer(nodes_at, layer.points, node)? {
                Some(p) => p,
                None => return Ok(Vec::new()),
            },
        };
        if position >= layer.points {
            return Ok(Vec::new());
        }
        let start = self.u32_at(layer.offsets_at + position * 4)? as usize;
        let end = self.u32_at(layer.offsets_at + position * 4 + 4)? as usize;
        if start > end || end > layer.links {
            return Ok(Vec::new());
        }
        let bytes = self.bytes(layer.links_at + start * 4, (end - start) * 4)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize)
            .filter(|&n| n < self.shape.points)
            .collect())
    }

    fn find_in_layer(&self, nodes_at: usize, points: usize, node: usize) -> Result<Option<usize>> {
        let (mut lo, mut hi) = (0, points);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match (self.u32_at(nodes_at + mid * 4)? as usize).cmp(&node) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(Some(mid)),
            }
        }
        Ok(None)
    }

    /// The best `ef` nodes for `query` among those `keep` accepts (by
    /// slot), with their approximate similarities, best first: greedy
    /// descent through the upper layers, then a beam of `ef` in layer 0.
    /// The walk crosses nodes `keep` refuses; only results are filtered.
    pub fn search(
        &self,
        query: &[f32],
        ef: usize,
        keep: &dyn Fn(Slot) -> bool,
    ) -> Result<Vec<(Slot, f32)>> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let query = self.query(query);
        let mut current = self.shape.entry;
        let mut best = self.score(&query, current)?;
        for level in (1..self.layout.layers.len()).rev() {
            loop {
                let mut moved = false;
                for next in self.links(level, current)? {
                    let score = self.score(&query, next)?;
                    if score > best {
                        (best, current, moved) = (score, next, true);
                    }
                }
                if !moved {
                    break;
                }
            }
        }
        let mut visited = vec![0u64; self.len().div_ceil(64)];
        let mut seen = |n: usize| {
            let fresh = visited[n / 64] & (1 << (n % 64)) == 0;
            visited[n / 64] |= 1 << (n % 64);
            fresh
        };
        seen(current);
        // Candidates best first; results worst first (to drop the worst).
        let mut candidates = BinaryHeap::from([(Ordered(best), current)]);
        let mut results: BinaryHeap<(Reverse<Ordered>, usize)> = BinaryHeap::new();
        let admit = |score: f32, node: usize, results: &mut BinaryHeap<_>| -> Result<()> {
            if keep(self.slot(node)?) {
                results.push((Reverse(Ordered(score)), node));
                if results.len() > ef {
                    results.pop();
                }
            }
            Ok(())
        };
        admit(best, current, &mut results)?;
        // The walk stops when the best candidate left is worse than the
        // worst of a full result list, or after a bounded number of hops
        // when a strict filter keeps the result list from filling.
        let mut hops = 0;
        let limit = ef.saturating_mul(64).max(4096);
        while let Some((Ordered(score), node)) = candidates.pop() {
            let worst = results.peek().map(|(Reverse(Ordered(s)), _)| *s);
            if results.len() >= ef && worst.is_some_and(|w| score < w) || hops > limit {
                break;
            }
            hops += 1;
            for next in self.links(0, node)? {
                if !seen(next) {
                    continue;
                }
                let s = self.score(&query, next)?;
                let worst = results.peek().map(|(Reverse(Ordered(w)), _)| *w);
                if results.len() < ef || worst.is_none_or(|w| s > w) || candidates.len() < ef {
                    candidates.push((Ordered(s), next));
                    admit(s, next, &mut results)?;
                }
            }
        }
        let mut found = results
            .into_iter()
            .map(|(Reverse(Ordered(s)), node)| Ok((self.slot(node)?, s)))
            .collect::<Result<Vec<_>>>()?;
        found.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(found)
    }

    /// Approximate similarities of the given slots that the segment holds.
    pub fn score_slots(
        &self,
        query: &[f32],
        slots: impl Iterator<Item = Slot>,
    ) -> Result<Vec<(Slot, f32)>> {
        let query = self.query(query);
        let mut scored = Vec::new();
        for slot in slots {
            if let Some(node) = self.node(slot)? {
                scored.push((slot, self.score(&query, node)?));
            }
        }
        Ok(scored)
    }

    /// Checks every block now (for `lore doctor` and tests).
    pub fn verify_all(&self) -> Result<()> {
        (0..self.layout.body.div_ceil(BLOCK)).try_for_each(|b| self.verify(b))
    }
}

/// f32 ordered by `total_cmp`, for heaps.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ordered(f32);

impl Eq for Ordered {}

impl PartialOrd for Ordered {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ordered {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// One point of an hnsw_rs graph, as the segment writer reads it.
struct Source {
    slot: Slot,
    level: usize,
    point: std::sync::Arc<hnsw_rs::hnsw::Point<'static, f32>>,
}

/// Writes `graph` as a segment at `path` (through a temporary file,
/// fsynced, then renamed). The graph's data ids are slots.
pub fn write<D: Distance<f32> + Send + Sync>(
    graph: &Hnsw<'static, f32, D>,
    dim: usize,
    path: &Path,
) -> Result<()> {
    if graph.get_nb_point() == 0 {
        return Err(err("an empty graph is not written as a segment"));
    }
    let mut points: Vec<Source> = graph
        .get_point_indexation()
        .into_iter()
        .map(|point| Source {
            slot: Slot(point.get_origin_id() as u64),
            level: usize::from(point.get_point_id().0),
            point,
        })
        .collect();
    points.sort_by_key(|p| p.slot);
    if points.windows(2).any(|w| w[0].slot == w[1].slot) {
        return Err(err("the graph holds a slot twice"));
    }
    let node_of = |slot: usize| {
        points
            .binary_search_by_key(&Slot(slot as u64), |p| p.slot)
            .ok()
    };
    let top = points
        .iter()
        .map(|p| p.level)
        .max()
        .unwrap_or(0)
        .min(MAX_LAYERS - 1);
    let entry = points
        .iter()
        .position(|p| p.level == top)
        .unwrap_or_default();
    // CSR per layer: the nodes in it, offsets into the links, the links.
    let mut layers: Vec<(Vec<u32>, Vec<u32>, Vec<u32>)> = vec![Default::default(); top + 1];
    for (node, p) in points.iter().enumerate() {
        for (level, neighbours) in p.point.get_neighborhood_id().into_iter().enumerate() {
            if level > p.level.min(top) {
                break;
            }
            let (nodes, offsets, links) = &mut layers[level];
            nodes.push(node as u32);
            offsets.push(links.len() as u32);
            links.extend(
                neighbours
                    .iter()
                    .filter_map(|n| node_of(n.get_origin_id()))
                    .map(|n| n as u32),
            );
        }
    }
    for (_, offsets, links) in &mut layers {
        offsets.push(u32::try_from(links.len()).map_err(|_| err("too many links for a segment"))?);
    }
    let shape = Shape {
        dim,
        points: points.len(),
        entry,
        layers: layers.iter().map(|(n, _, l)| (n.len(), l.len())).collect(),
    };
    let tmp = path.with_extension("tmp");
    let mut out = SegmentWriter::create(&tmp, &shape)?;
    out.put(points.iter().flat_map(|p| p.slot.0.to_le_bytes()))?;
    let quantized: Vec<(Vec<i8>, f32)> = points.iter().map(|p| quantize(p.point.get_v())).collect();
    out.put(quantized.iter().flat_map(|(_, s)| s.to_le_bytes()))?;
    out.pad()?;
    for (q, _) in &quantized {
        if q.len() != dim {
            return Err(err("a vector of the wrong dimension"));
        }
        out.put(bytemuck::cast_slice::<i8, u8>(q).iter().copied())?;
    }
    out.pad()?;
    drop(quantized);
    for (level, (nodes, offsets, links)) in layers.iter().enumerate() {
        if level > 0 {
            out.put(nodes.iter().flat_map(|n| n.to_le_bytes()))?;
            out.pad()?;
        }
        out.put(offsets.iter().flat_map(|n| n.to_le_bytes()))?;
        out.pad()?;
        out.put(links.iter().flat_map(|n| n.to_le_bytes()))?;
        out.pad()?;
    }
    out.finish()?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Streams a body, summing each block as it goes, then writes the header.
struct SegmentWriter {
    path: PathBuf,
    file: BufWriter<std::fs::File>,
    shape: Shape,
    body: usize,
    written: usize,
    block: crc32fast::Hasher,
    sums: Vec<u32>,
}

impl SegmentWriter {
    fn create(path: &Path, shape: &Shape) -> Result<SegmentWriter> {
        let layout = shape
            .layout()
            .ok_or_else(|| err("segment sizes overflow"))?;
        let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
        let mut file = BufWriter::with_capacity(1 << 20, file);
        let prefix = shape.prefix(layout.body);
        file.write_all(&vec![0u8; prefix])
            .map_err(|e| Error::io(path, e))?;
        Ok(SegmentWriter {
            path: path.to_path_buf(),
            file,
            shape: shape.clone(),
            body: layout.body,
            written: 0,
            block: crc32fast::Hasher::new(),
            sums: Vec::new(),
        })
    }

    fn put(&mut self, bytes: impl Iterator<Item = u8>) -> Result<()> {
        let mut buf = Vec::with_capacity(64 * 1024);
        for b in bytes {
            buf.push(b);
            if buf.len() == buf.capacity() {
                self.write(&buf)?;
                buf.clear();
            }
        }
        self.write(&buf)
    }

    fn pad(&mut self) -> Result<()> {
        let zeros = pad8(self.written) - self.written;
        self.write(&vec![0u8; zeros])
    }

    fn write(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let room = BLOCK - self.written % BLOCK;
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.block.update(now);
            self.written += now.len();
            if self.written.is_multiple_of(BLOCK) {
                let done = std::mem::take(&mut self.block);
                self.sums.push(done.finalize());
            }
            self.file
                .write_all(now)
                .map_err(|e| Error::io(&self.path, e))?;
            bytes = rest;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        if self.written != self.body {
            return Err(err(format!(
                "segment body is {} bytes, its layout says {}",
                self.written, self.body
            )));
        }
        if !self.written.is_multiple_of(BLOCK) {
            let last = std::mem::take(&mut self.block);
            self.sums.push(last.finalize());
        }
        let mut rest = self.shape.directory();
        rest.extend(self.sums.iter().flat_map(|s| s.to_le_bytes()));
        let crc = header_crc(&self.shape.header(self.body, 0), &rest);
        let header = self.shape.header(self.body, crc);
        let io = |e| Error::io(&self.path, e);
        self.file.seek(SeekFrom::Start(0)).map_err(io)?;
        self.file.write_all(&header).map_err(io)?;
        self.file.write_all(&rest).map_err(io)?;
        let file = self
            .file
            .into_inner()
            .map_err(|e| Error::io(&self.path, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::flat::conformance::unit;
    use crate::store::vectors::UnitCosine;

    fn graph(n: u64, dim: usize) -> Hnsw<'static, f32, UnitCosine> {
        let graph = Hnsw::new(16, n as usize, 16, 100, UnitCosine);
        let items: Vec<(Vec<f32>, usize)> =
            (0..n).map(|i| (unit(i, dim), i as usize * 3)).collect();
        let data: Vec<(&[f32], usize)> = items.iter().map(|(v, s)| (v.as_slice(), *s)).collect();
        graph.parallel_insert_slice(&data);
        graph
    }

    fn written(n: u64, dim: usize) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.seg");
        write(&graph(n, dim), dim, &path).unwrap();
        (dir, path)
    }

    #[test]
    fn int8_dot_matches_the_exact_one() {
        let (a, b) = (unit(1, 384), unit(2, 384));
        let ((qa, sa), (qb, sb)) = (quantize(&a), quantize(&b));
        let exact = crate::kernels::dot(&a, &b);
        let approx = dot_i8(&qa, &qb) as f32 * sa * sb;
        assert!((exact - approx).abs() < 0.01, "{exact} vs {approx}");
    }

    #[test]
    fn the_segment_finds_what_an_exact_scan_finds() {
        let dim = 32;
        let (_dir, path) = written(3000, dim);
        let segment = Segment::open(&path).unwrap();
        assert_eq!(segment.len(), 3000);
        let mut found = 0;
        let queries = 50;
        for q in 0..queries {
            let query = unit(100_000 + q, dim);
            let mut truth: Vec<(u64, f32)> = (0..3000)
                .map(|i| (i * 3, crate::kernels::dot(&query, &unit(i, dim))))
                .collect();
            truth.sort_by(|a, b| b.1.total_cmp(&a.1));
            let hits = segment.search(&query, 64, &|_| true).unwrap();
            let hits: std::collections::HashSet<u64> =
                hits.iter().take(10).map(|(s, _)| s.0).collect();
            found += truth[..10].iter().filter(|(s, _)| hits.contains(s)).count();
        }
        let recall = found as f64 / (queries as f64 * 10.0);
        assert!(recall > 0.9, "recall@10 {recall}");
    }

    #[test]
    fn filters_and_slot_lookups_hold() {
        let (_dir, path) = written(500, 16);
        let segment = Segment::open(&path).unwrap();
        let hits = segment.search(&unit(7, 16), 10, &|s| s.0 % 2 == 0).unwrap();
        assert_eq!(hits.len(), 10);
        assert!(hits.iter().all(|(s, _)| s.0 % 2 == 0));
        assert_eq!(segment.node(Slot(21)).unwrap(), Some(7));
        assert_eq!(segment.node(Slot(22)).unwrap(), None);
        assert_eq!(segment.slots().unwrap().len(), 500);
    }

    #[test]
    fn damaged_segments_are_refused_or_reported_never_read_out_of_bounds() {
        let (_dir, path) = written(2000, 64);
        let bytes = std::fs::read(&path).unwrap();
        let write = |b: &[u8]| std::fs::write(&path, b).unwrap();
        // Truncated, or a length or header field that lies: refused at open.
        write(&bytes[..bytes.len() / 2]);
        assert!(Segment::open(&path).is_err());
        let mut huge = bytes.clone();
        huge[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        write(&huge);
        assert!(Segment::open(&path).is_err());
        let mut body = bytes.clone();
        body[48] ^= 1;
        write(&body);
        assert!(Segment::open(&path).is_err());
        // A flipped byte in the body: opens, and the block is reported
        // when a search reads it, never used.
        let mut flipped = bytes.clone();
        let at = flipped.len() - 100;
        flipped[at] ^= 0x5a;
        write(&flipped);
        let segment = Segment::open(&path).unwrap();
        assert!(segment.verify_all().is_err());
        assert!(segment.is_damaged());
        write(&bytes);
        Segment::open(&path).unwrap().verify_all().unwrap();
    }
}

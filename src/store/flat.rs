//! An exact, in-memory [`VectorIndex`]: brute-force cosine (dot product of
//! unit vectors) over every live vector. It is the oracle the HNSW graph is measured against (recall
//! tests, `lore bench search`), and the reference the conformance suite runs
//! both implementations through. `persist` keeps nothing: it lives in memory.

use std::collections::{BTreeMap, HashSet};
use std::sync::RwLock;

use super::{SlotSet, VectorIndex, VectorSource, check_dims};
use crate::error::{Error, Result};
use crate::kernels::dot;
use crate::types::Slot;

/// Exact nearest-neighbour search by scanning.
pub struct FlatVectorIndex {
    dim: usize,
    vectors: RwLock<BTreeMap<Slot, Vec<f32>>>,
}

impl FlatVectorIndex {
    /// An empty index of `dim`-dimensional vectors.
    pub fn new(dim: usize) -> Self {
        FlatVectorIndex {
            dim,
            vectors: RwLock::new(BTreeMap::new()),
        }
    }

    fn lock_err() -> Error {
        Error::store("vectors", "lock poisoned")
    }
}

impl VectorIndex for FlatVectorIndex {
    fn insert(&self, items: &[(Slot, Vec<f32>)]) -> Result<()> {
        check_dims(self.dim, items.iter().map(|(_, v)| v.as_slice()))?;
        let mut vectors = self.vectors.write().map_err(|_| Self::lock_err())?;
        vectors.extend(items.iter().cloned());
        Ok(())
    }

    fn remove(&self, slots: &[Slot]) {
        if let Ok(mut vectors) = self.vectors.write() {
            slots.iter().for_each(|s| {
                vectors.remove(s);
            });
        }
    }

    fn search(
        &self,
        query: &[f32],
        k: usize,
        filter: Option<&(dyn Fn(Slot) -> bool + Sync)>,
    ) -> Result<Vec<(Slot, f32)>> {
        check_dims(self.dim, [query])?;
        let vectors = self.vectors.read().map_err(|_| Self::lock_err())?;
        let scored: Vec<(Slot, f32)> = vectors
            .iter()
            .filter(|(slot, _)| filter.is_none_or(|f| f(**slot)))
            .map(|(slot, v)| (*slot, dot(query, v)))
            .collect();
        Ok(super::top_k(scored, k))
    }

    fn search_among(&self, query: &[f32], k: usize, slots: &SlotSet) -> Result<Vec<(Slot, f32)>> {
        self.search(query, k, Some(&|slot| slots.contains(slot)))
    }

    fn len(&self) -> u64 {
        self.vectors.read().map_or(0, |v| v.len() as u64)
    }

    fn tombstone_count(&self) -> u64 {
        0
    }

    fn restore_tombstones(&self, slots: &[Slot]) -> Result<Vec<Slot>> {
        let held: HashSet<Slot> = self
            .vectors
            .read()
            .map_err(|_| Self::lock_err())?
            .keys()
            .copied()
            .collect();
        self.remove(slots);
        Ok(slots
            .iter()
            .copied()
            .filter(|s| !held.contains(s))
            .collect())
    }

    fn persist(&self, _watermark: Slot) -> Result<()> {
        Ok(())
    }

    fn rebuild(&self, items: &[(Slot, Vec<f32>)]) -> Result<()> {
        self.vectors.write().map_err(|_| Self::lock_err())?.clear();
        self.insert(items)
    }
}

/// The vectors it holds are exact: it can stand in for the doc store as
/// what a segment rescores from (benches and tests).
impl VectorSource for FlatVectorIndex {
    fn vector(&self, slot: Slot) -> Result<Option<Vec<f32>>> {
        Ok(self
            .vectors
            .read()
            .map_err(|_| Self::lock_err())?
            .get(&slot)
            .cloned())
    }

    fn scan_vectors(
        &self,
        from: Slot,
        each: &mut dyn FnMut(Slot, Vec<f32>) -> Result<()>,
    ) -> Result<()> {
        let vectors = self.vectors.read().map_err(|_| Self::lock_err())?;
        vectors
            .range(from..)
            .try_for_each(|(slot, v)| each(*slot, v.clone()))
    }
}

/// The contract of [`VectorIndex`], run against every implementation.
#[cfg(test)]
pub(crate) mod conformance {
    use super::*;

    /// A deterministic pseudo-random unit vector.
    pub fn unit(seed: u64, dim: usize) -> Vec<f32> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut v: Vec<f32> = (0..dim)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
            })
            .collect();
        crate::embed::normalize(&mut v);
        v
    }

    pub fn check(index: &dyn VectorIndex) {
        let dim = 16;
        let items: Vec<_> = (0..300).map(|i| (Slot(i), unit(i, dim))).collect();
        index.insert(&items).unwrap();
        assert_eq!(index.len(), 300);
        // A stored vector is its own nearest neighbour, with cosine ~1.
        let hits = index.search(&unit(42, dim), 5, None).unwrap();
        assert_eq!(hits[0].0, Slot(42));
        assert!((hits[0].1 - 1.0).abs() < 1e-4);
        assert!(hits.windows(2).all(|w| w[0].1 >= w[1].1), "best first");
        // Removed slots never come back, and k is still filled.
        index.remove(&[Slot(42)]);
        let hits = index.search(&unit(42, dim), 10, None).unwrap();
        assert_eq!(hits.len(), 10);
        assert!(hits.iter().all(|(s, _)| *s != Slot(42)));
        assert_eq!(index.len(), 299);
        // Filters apply inside the search.
        let even = |s: Slot| s.0.is_multiple_of(2);
        let hits = index.search(&unit(7, dim), 10, Some(&even)).unwrap();
        assert_eq!(hits.len(), 10);
        assert!(hits.iter().all(|(s, _)| s.0.is_multiple_of(2)));
        // Exact search among a few slots: exactly the best of them, and
        // it follows later inserts and removals.
        let few: SlotSet = (0..300).step_by(7).map(Slot).collect();
        let query = unit(1000, dim);
        let best = |index: &dyn VectorIndex, few: &SlotSet| {
            let mut truth: Vec<(Slot, f32)> = few
                .iter()
                .filter(|s| s.0 != 42)
                .map(|s| (s, dot(&query, &unit(s.0, dim))))
                .collect();
            truth.sort_by(|a, b| b.1.total_cmp(&a.1));
            truth.truncate(5);
            let found = index.search_among(&query, 5, few).unwrap();
            let ids = |v: &[(Slot, f32)]| v.iter().map(|(s, _)| *s).collect::<Vec<_>>();
            assert_eq!(ids(&found), ids(&truth));
        };
        best(index, &few);
        index.insert(&[(Slot(300), unit(300, dim))]).unwrap();
        let mut more = few.clone();
        more.insert(Slot(300));
        best(index, &more);
        index.remove(&[Slot(7)]);
        let found = index.search_among(&unit(7, dim), 5, &more).unwrap();
        assert!(found.iter().all(|(s, _)| *s != Slot(7)));
        index.rebuild(&items).unwrap();
        index.remove(&[Slot(42)]);
        // Wrong dimensions are errors, not panics.
        assert!(index.search(&[1.0; 3], 1, None).is_err());
        assert!(index.insert(&[(Slot(999), vec![1.0; 3])]).is_err());
        // Rebuild keeps exactly what it is given.
        index.rebuild(&items[..50]).unwrap();
        assert_eq!(index.len(), 50);
        assert_eq!(index.tombstone_count(), 0);
    }

    #[test]
    fn flat_index_meets_the_contract() {
        check(&FlatVectorIndex::new(16));
    }

    #[test]
    fn hnsw_index_meets_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let (index, _) = crate::store::vectors::tests::open(dir.path(), 16, 301);
        check(&index);
    }
}

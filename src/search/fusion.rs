//! Fusion of the dense and BM25 ranked lists into one. Both methods are
//! here so `lore eval` can measure them side by side; README and
//! ARCHITECTURE.md record the numbers that chose the default.

use std::collections::HashMap;
use std::hash::Hash;

/// Reciprocal rank fusion constant (Cormack et al., 2009).
pub const RRF_K: f32 = 60.0;

/// Reciprocal rank fusion: each list contributes `1 / (RRF_K + rank)` per
/// item. Ties break on the key, so the result is deterministic.
pub fn reciprocal_rank<K: Copy + Eq + Hash + Ord>(lists: &[&[(K, f32)]]) -> Vec<(K, f32)> {
    let mut scores: HashMap<K, f32> = HashMap::new();
    for list in lists {
        for (rank, (slot, _)) in list.iter().enumerate() {
            *scores.entry(*slot).or_default() += 1.0 / (RRF_K + rank as f32 + 1.0);
        }
    }
    let mut fused: Vec<(K, f32)> = scores.into_iter().collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    fused
}

/// Linear fusion: each list's scores are min-max normalised to [0, 1],
/// then combined as `dense_weight * dense + (1 - dense_weight) * bm25`; an
/// item missing from a list gets 0 there.
pub fn linear<K: Copy + Eq + Hash + Ord>(
    dense: &[(K, f32)],
    bm25: &[(K, f32)],
    dense_weight: f32,
) -> Vec<(K, f32)> {
    let mut scores: HashMap<K, f32> = HashMap::new();
    for (list, weight) in [(dense, dense_weight), (bm25, 1.0 - dense_weight)] {
        let max = list
            .iter()
            .map(|(_, s)| *s)
            .fold(f32::NEG_INFINITY, f32::max);
        let min = list.iter().map(|(_, s)| *s).fold(f32::INFINITY, f32::min);
        let span = (max - min).max(f32::EPSILON);
        for (slot, score) in list {
            *scores.entry(*slot).or_default() += weight * (score - min) / span;
        }
    }
    let mut fused: Vec<(K, f32)> = scores.into_iter().collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    fused
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Slot;

    #[test]
    fn items_in_both_lists_rank_first() {
        let dense = [(Slot(1), 0.9), (Slot(2), 0.8)];
        let bm25 = [(Slot(3), 9.0), (Slot(2), 7.0)];
        let fused = reciprocal_rank(&[&dense, &bm25]);
        assert_eq!(fused[0].0, Slot(2));
        assert_eq!(fused.len(), 3);
    }

    #[test]
    fn linear_fusion_weights_normalised_scores() {
        let dense = [(Slot(1), 0.9), (Slot(2), 0.5)];
        let bm25 = [(Slot(2), 12.0), (Slot(3), 2.0)];
        let fused = linear(&dense, &bm25, 0.5);
        // Slot 1: 0.5 * 1; slot 2: 0.5 * 0 + 0.5 * 1; slot 3: 0.
        assert_eq!(fused[0].1, 0.5);
        assert_eq!(fused.last().unwrap().0, Slot(3));
        let dense_only = linear(&dense, &bm25, 1.0);
        assert_eq!(dense_only[0].0, Slot(1));
    }

    #[test]
    fn fusion_is_deterministic_on_ties() {
        let a = [(Slot(5), 1.0)];
        let b = [(Slot(4), 1.0)];
        assert_eq!(reciprocal_rank(&[&a, &b]), reciprocal_rank(&[&b, &a]));
    }
}

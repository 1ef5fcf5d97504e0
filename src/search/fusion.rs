//! Rank fusion of several ranked lists into one.

use std::collections::HashMap;

use crate::types::Slot;

/// Reciprocal rank fusion constant (Cormack et al., 2009).
pub const RRF_K: f32 = 60.0;

/// Reciprocal rank fusion: each list contributes `1 / (RRF_K + rank)` per
/// item. Ties break on the slot, so the result is deterministic.
pub fn reciprocal_rank(lists: &[&[(Slot, f32)]]) -> Vec<(Slot, f32)> {
    let mut scores: HashMap<Slot, f32> = HashMap::new();
    for list in lists {
        for (rank, (slot, _)) in list.iter().enumerate() {
            *scores.entry(*slot).or_default() += 1.0 / (RRF_K + rank as f32 + 1.0);
        }
    }
    let mut fused: Vec<(Slot, f32)> = scores.into_iter().collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    fused
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_in_both_lists_rank_first() {
        let dense = [(Slot(1), 0.9), (Slot(2), 0.8)];
        let bm25 = [(Slot(3), 9.0), (Slot(2), 7.0)];
        let fused = reciprocal_rank(&[&dense, &bm25]);
        assert_eq!(fused[0].0, Slot(2));
        assert_eq!(fused.len(), 3);
    }

    #[test]
    fn fusion_is_deterministic_on_ties() {
        let a = [(Slot(5), 1.0)];
        let b = [(Slot(4), 1.0)];
        assert_eq!(reciprocal_rank(&[&a, &b]), reciprocal_rank(&[&b, &a]));
    }
}

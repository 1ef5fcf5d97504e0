//! Generated text → an [`Answer`]: citation numbers resolved to the chunks
//! they name, numbers that name nothing dropped and reported, and the
//! abstention recognised.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::prompt::{NOT_IN_DOCUMENTS, Source};
use crate::types::ChunkId;

/// A citation resolved to its chunk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Citation {
    /// The number used in the answer.
    pub n: usize,
    /// Source path.
    pub path: String,
    /// Chunk id.
    pub chunk_id: ChunkId,
    /// Byte range in the source.
    pub byte_range: Range<usize>,
    /// Heading path.
    pub heading: Vec<String>,
}

/// The numbers cited in `text` (`[1]`, `[1, 3]`, `[2][4]`), in order of
/// first appearance, without repeats.
pub fn cited_numbers(text: &str) -> Vec<usize> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        let Some(close) = after.find(']') else { break };
        let inside = &after[..close];
        if inside
            .chars()
            .all(|c| c.is_ascii_digit() || c == ',' || c == ' ')
        {
            for n in inside
                .split(',')
                .filter_map(|p| p.trim().parse::<usize>().ok())
            {
                if !found.contains(&n) {
                    found.push(n);
                }
            }
        }
        rest = &after[close..];
    }
    found
}

/// Resolves the citations of `text` against `sources`: valid ones, and the
/// numbers that point at no source.
pub fn resolve(text: &str, sources: &[Source]) -> (Vec<Citation>, Vec<usize>) {
    let mut citations = Vec::new();
    let mut invalid = Vec::new();
    for n in cited_numbers(text) {
        match sources.iter().find(|s| s.n == n) {
            Some(s) => citations.push(Citation {
                n,
                path: s.hit.path.clone(),
                chunk_id: s.hit.chunk_id.clone(),
                byte_range: s.hit.byte_range.clone(),
                heading: s.hit.heading.clone(),
            }),
            None => invalid.push(n),
        }
    }
    (citations, invalid)
}

/// True when the model said the sources do not hold the answer.
pub fn is_abstention(text: &str) -> bool {
    let t = text.trim().to_lowercase();
    let marker = NOT_IN_DOCUMENTS.trim_end_matches('.').to_lowercase();
    t.starts_with(&marker) || t.starts_with("i don't know") || t.starts_with("i do not know")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn citation_numbers_are_found_in_their_forms() {
        assert_eq!(
            cited_numbers("A [1]. B [2, 3][1] and [x] [10]"),
            vec![1, 2, 3, 10]
        );
        assert!(cited_numbers("no citations [here]").is_empty());
    }

    #[test]
    fn abstention_is_recognised() {
        assert!(is_abstention("I don't know based on the documents."));
        assert!(!is_abstention("The answer is 5 minutes [1]."));
    }
}

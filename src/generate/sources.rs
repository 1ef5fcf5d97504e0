//! Sources' keys and values, reused at any position (issue 25's chunk
//! reuse). A source in a prompt is a paragraph whose first line opens with
//! a citation label (`[3] path — heading`, as `prompt` writes one); the rest
//! of it up to the next source, turn or the question is its body. With
//! reuse on, a body is always computed the same way: right after the
//! prompt's context (everything before its first source) at the position
//! where the first source would start, attending to that context and to
//! itself only. Its keys are then rotated to where it stands in this
//! prompt. So a body's keys and values depend only on its text and the
//! context, a [`SourceCache`] keyed by both can hand them to any later
//! prompt that gives the same source at any place among any others, and a
//! prompt is computed alike whether its sources came from the cache or
//! not. What a body loses is attention to the sources before it; the
//! label lines, the question and the answer are computed in place and see
//! everything.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use super::decoder::Kept;

/// Fewest tokens a body has to be worth reusing.
pub const MIN_BODY: usize = 16;
/// Most tokens a body may have: a longer one is computed in place.
pub const MAX_BODY: usize = 1024;

/// A source's body: tokens `start..end` of a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Body {
    pub start: usize,
    pub end: usize,
}

/// Whether `text` opens with a citation label: `[`, one to four digits,
/// `] `.
pub fn is_label(text: &[u8]) -> bool {
    let digits = text
        .iter()
        .skip(1)
        .take_while(|b| b.is_ascii_digit())
        .count();
    text.first() == Some(&b'[')
        && (1..=4).contains(&digits)
        && text[1 + digits..].starts_with(b"] ")
}

/// Where a body keeps its keys and values: its tokens and its context.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    context: u64,
    body: Vec<u32>,
}

/// A hash of a prompt's context tokens (what precedes its first source).
pub fn context_hash(context: &[u32]) -> u64 {
    let mut hasher = DefaultHasher::new();
    context.hash(&mut hasher);
    hasher.finish()
}

/// Bodies' keys and values, at most `capacity` bytes of them, the least
/// recently used dropped first. A changed source has other tokens, so it
/// is another entry; the cache belongs to one loaded model.
pub struct SourceCache {
    entries: HashMap<Key, (Arc<Kept>, u64)>,
    capacity: usize,
    bytes: usize,
    clock: u64,
}

impl SourceCache {
    /// An empty cache of at most `capacity` bytes.
    pub fn new(capacity: usize) -> SourceCache {
        SourceCache {
            entries: HashMap::new(),
            capacity,
            bytes: 0,
            clock: 0,
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The body `body` computed after `context`, if kept.
    pub fn get(&mut self, context: u64, body: &[u32]) -> Option<Arc<Kept>> {
        self.clock += 1;
        let key = Key {
            context,
            body: body.to_vec(),
        };
        let (kept, used) = self.entries.get_mut(&key)?;
        *used = self.clock;
        Some(kept.clone())
    }

    /// Keeps `kept` for `body` after `context`, dropping the least recently
    /// used entries to make room; one larger than the whole cache is not
    /// kept.
    pub fn insert(&mut self, context: u64, body: &[u32], kept: Arc<Kept>) {
        let size = kept.bytes();
        if size > self.capacity {
            return;
        }
        while self.bytes + size > self.capacity {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(key, _)| key.clone())
            else {
                break;
            };
            if let Some((dropped, _)) = self.entries.remove(&oldest) {
                self.bytes -= dropped.bytes();
            }
        }
        self.clock += 1;
        let key = Key {
            context,
            body: body.to_vec(),
        };
        if let Some((old, _)) = self.entries.insert(key, (kept, self.clock)) {
            self.bytes -= old.bytes();
        }
        self.bytes += size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_numbers_in_brackets_then_a_space() {
        assert!(is_label(b"[1] /docs/a.md"));
        assert!(is_label(b"[1234] x"));
        for not in [&b"[12345] x"[..], b"[] x", b"[a] x", b"[1]x", b"1] x", b"["] {
            assert!(!is_label(not), "{}", String::from_utf8_lossy(not));
        }
    }
}

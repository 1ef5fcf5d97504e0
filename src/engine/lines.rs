//! Reading JSON lines with a bound: a line longer than the limit is
//! skipped as it streams past, never held whole in memory, so one
//! multi-gigabyte line costs a buffer, not the process.

use std::io::BufRead;

/// One line of input.
pub enum Line {
    /// Its bytes, without the newline.
    Whole(Vec<u8>),
    /// It was longer than the limit; this many bytes were skipped.
    TooLong(u64),
}

/// The next line of `input`, at most `max` bytes of it kept; `None` at the
/// end of the input.
pub fn next_line(input: &mut dyn BufRead, max: usize) -> std::io::Result<Option<Line>> {
    let mut kept = Vec::new();
    let mut seen: u64 = 0;
    loop {
        let available = match input.fill_buf() {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok((seen > 0).then(|| finish(kept, seen, max)));
        }
        let (piece, ends) = match available.iter().position(|&b| b == b'\n') {
            Some(at) => (&available[..at], true),
            None => (available, false),
        };
        if seen + piece.len() as u64 <= max as u64 {
            kept.extend_from_slice(piece);
        }
        seen += piece.len() as u64;
        let used = piece.len() + usize::from(ends);
        input.consume(used);
        if ends {
            // A blank line still counts as a line.
            return Ok(Some(finish(kept, seen.max(1), max)));
        }
    }
}

fn finish(kept: Vec<u8>, seen: u64, max: usize) -> Line {
    if seen > max as u64 {
        Line::TooLong(seen)
    } else {
        Line::Whole(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_skipped_as_they_stream_and_the_rest_still_read() {
        let mut long = vec![b'x'; 10_000];
        long.push(b'\n');
        let input = [b"ab\n\n".as_slice(), &long, b"cd"].concat();
        let mut reader = std::io::BufReader::with_capacity(64, input.as_slice());
        let mut lines = Vec::new();
        while let Some(line) = next_line(&mut reader, 100).unwrap() {
            lines.push(match line {
                Line::Whole(bytes) => String::from_utf8(bytes).unwrap(),
                Line::TooLong(n) => format!("too long: {n}"),
            });
        }
        assert_eq!(lines, ["ab", "", "too long: 10000", "cd"]);
    }
}

//! Crash safety: `kill -9` a real ingest at random moments, check that the
//! index opens consistent every time, and that a rerun ends with the same
//! counts as an uninterrupted run. Merges of the vector graph into a new
//! segment are made small and frequent so that kills land inside them.

use std::time::{Duration, Instant};

use crate::util::{Lcg, json, lore, status, write_corpus};

fn counts(s: &serde_json::Value) -> Vec<u64> {
    ["documents", "chunks", "vectors", "keyword_docs"]
        .iter()
        .map(|k| s[k].as_u64().unwrap())
        .collect()
}

#[test]
fn kill_nine_during_ingest_leaves_a_consistent_index() {
    let tmp = tempfile::tempdir().unwrap();
    // Small checkpoints so kills land before, during and after them.
    std::fs::write(
        tmp.path().join("lore.toml"),
        // Small merges too, so kills land while the mutable graph is
        // folded into a new segment.
        "[ingest]\ncheckpoint_chunks = 24\n[hnsw]\nmerge_min = 40\n",
    )
    .unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("crash test seed {seed}");
    let mut rng = Lcg(seed);
    let corpus = tmp.path().join("docs");
    write_corpus(&corpus, 120, &mut Lcg(7));

    let reference = tmp.path().join("reference");
    let start = Instant::now();
    json(lore(&reference).arg("ingest").arg(&corpus).arg("--json"));
    let full = start.elapsed();
    let expected = counts(&status(&reference));

    let victim = tmp.path().join("victim");
    for round in 0..5 {
        let mut child = lore(&victim)
            .arg("ingest")
            .arg(&corpus)
            .arg("--json")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let delay =
            full.mul_f64(0.15 + (rng.next() % 1000) as f64 / 1000.0 * 0.7 / (round as f64 + 1.0));
        std::thread::sleep(delay.max(Duration::from_millis(150)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let s = status(&victim);
        eprintln!(
            "round {round}: killed after {delay:?} of {full:?}: {:?}",
            counts(&s)
        );
        assert_eq!(
            s["consistent"], true,
            "round {round} (killed after {delay:?}): {s}"
        );
        if s["chunks"].as_u64() > Some(0) {
            let hits = json(lore(&victim).args(["search", "ledger invoice", "--json"]));
            assert!(
                !hits["hits"].as_array().unwrap().is_empty(),
                "round {round}: the index does not answer: {hits}"
            );
        }
    }
    let report = json(lore(&victim).arg("ingest").arg(&corpus).arg("--json"));
    assert!(report["skipped"].as_array().unwrap().is_empty(), "{report}");
    let s = status(&victim);
    assert_eq!(s["consistent"], true, "{s}");
    assert_eq!(counts(&s), expected, "{s}");
    let merged = std::fs::read_dir(victim.join("vectors")).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("segment-")
    });
    assert!(merged, "the vectors were merged into a segment");
    // A further run finds nothing to do.
    let again = json(lore(&victim).arg("ingest").arg(&corpus).arg("--json"));
    assert_eq!(again["chunks_embedded"], 0, "{again}");
}

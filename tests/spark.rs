//! Distributed ingest: the Spark job (`scripts/spark/lore_spark.py`, in
//! `local[2]` mode) runs `lore embed` on every partition of `corpora/` plus
//! 2,000 records (sentences of the PubMedQA abstracts, a file each), `lore import --prune` loads its rows, and the index
//! equals the one `lore ingest` builds from the same folder: the same chunk
//! ids, vectors within 1e-6, the same hits for 20 queries. Then 5 documents
//! change and 2 disappear, both paths run again, and they still agree.
//!
//! pyspark comes from `scripts/install-spark.sh` (`make test` runs it);
//! `LORE_SPARK_PYTHON` names another interpreter that has it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lore::embed::Embedder;
use lore::embed::bert::BertEmbedder;
use lore::search::{Mode, SearchRequest};
use lore::types::Slot;
use lore::{Config, Engine};

use crate::util::{copy_dir, json, lore, models_dir, root, run_ok};

/// Records added to the corpus: sentences of the PubMedQA abstracts (up
/// to three of each), a file each.
const RECORDS: usize = 2000;

fn spark_python() -> PathBuf {
    std::env::var_os("LORE_SPARK_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_default();
            Path::new(&home).join(".cache/lore/spark-venv/bin/python")
        })
}

/// `corpora/` and the records, in `dir`.
fn corpus(dir: &Path) -> PathBuf {
    let corpus = dir.join("corpus");
    copy_dir(&root().join("corpora"), &corpus);
    let records = corpus.join("records");
    std::fs::create_dir_all(&records).unwrap();
    let pubmedqa = root().join("corpora/pubmedqa/corpus.jsonl");
    let text = std::fs::read_to_string(&pubmedqa).unwrap();
    let mut written = 0;
    for line in text.lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = record["_id"].as_str().unwrap();
        for (n, sentence) in record["text"]
            .as_str()
            .unwrap()
            .split(". ")
            .take(3)
            .enumerate()
        {
            if written == RECORDS {
                break;
            }
            let body = format!("# Abstract {id}, part {n}\n\n{sentence}.\n");
            std::fs::write(records.join(format!("rec-{written:04}.md")), body).unwrap();
            written += 1;
        }
    }
    assert_eq!(written, RECORDS);
    corpus.canonicalize().unwrap()
}

/// Runs the Spark job on `corpus`, then imports its rows into `index`.
fn spark_ingest(corpus: &Path, index: &Path, out: &Path) -> serde_json::Value {
    let python = spark_python();
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-spark.sh (make test does) or set LORE_SPARK_PYTHON",
        python.display()
    );
    let report = out.with_extension("json");
    run_ok(
        std::process::Command::new(&python)
            .arg(root().join("scripts/spark/lore_spark.py"))
            .args(["--master", "local[2]", "--input"])
            .arg(corpus)
            .arg("--output")
            .arg(out)
            .arg("--lore")
            .arg(env!("CARGO_BIN_EXE_lore"))
            .arg("--report")
            .arg(&report)
            .env("LORE_MODELS", models_dir()),
    );
    let mut rows = Vec::new();
    let mut shards: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("part-")
        })
        .collect();
    shards.sort();
    for shard in shards {
        rows.extend(std::fs::read(shard).unwrap());
    }
    let all = out.with_extension("jsonl");
    std::fs::write(&all, rows).unwrap();
    json(lore(index).args(["import", "--prune", "--json"]).arg(&all));
    serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap()
}

/// Every chunk of `engine`'s default collection: id → vector.
fn chunks(engine: &Engine) -> HashMap<String, Vec<f32>> {
    let collection = engine.collection("default").unwrap();
    let index = collection.index();
    let mut all = HashMap::new();
    index
        .docs()
        .scan_vectors(Slot(0), &mut |slot, vector| {
            let chunk = index.chunk_at(slot)?.expect("a live slot has a chunk");
            all.insert(chunk.id.0, vector);
            Ok(())
        })
        .unwrap();
    all
}

/// The two indexes hold the same chunks and vectors and answer `queries`
/// alike.
fn assert_same(ingested: &Path, imported: &Path, queries: &[String], when: &str) {
    let embedder: Arc<dyn Embedder> =
        Arc::new(BertEmbedder::load(&models_dir().join("all-minilm-l6-v2"), 256, 16).unwrap());
    let open = |index: &Path| {
        let config = Config {
            index: index.to_path_buf(),
            models: models_dir(),
            ..Config::default()
        };
        Engine::with_embedder(config, embedder.clone()).unwrap()
    };
    let (a, b) = (open(ingested), open(imported));
    let (want, got) = (chunks(&a), chunks(&b));
    assert_eq!(want.len(), got.len(), "{when}: chunk counts");
    for (id, vector) in &want {
        let other = got
            .get(id)
            .unwrap_or_else(|| panic!("{when}: chunk {id} missing"));
        let worst = vector
            .iter()
            .zip(other)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(worst <= 1e-6, "{when}: chunk {id} differs by {worst}");
    }
    for query in queries {
        let request = SearchRequest::new(query.clone(), 10, Mode::Hybrid);
        let hits = |engine: &Engine| -> Vec<(String, f32)> {
            let hits = engine.search(&request).unwrap().hits;
            hits.into_iter().map(|h| (h.chunk_id.0, h.score)).collect()
        };
        let (want, got) = (hits(&a), hits(&b));
        assert_eq!(want.len(), got.len(), "{when}: hits for {query:?}");
        // The same chunks in the same order, except among chunks tied on a
        // score, or on the last one (ties go by slot, and the two indexes
        // wrote their chunks in different orders). The fused scores
        // themselves differ a little: each graph is approximate in its own
        // way, so the candidate pools they are normalised over differ in
        // their tails.
        let last = want.last().map_or(0.0, |h| h.1);
        let tied = |score: f32| want.iter().filter(|h| (h.1 - score).abs() < 1e-6).count() > 1;
        for (w, g) in want.iter().zip(&got) {
            let same = format!("{when}: {query:?}: {want:?} vs {got:?}");
            assert!(w.0 == g.0 || tied(w.1) || w.1 <= last + 1e-6, "{same}");
        }
    }
}

#[test]
fn the_spark_job_builds_the_index_ingest_builds_and_keeps_it_equal_incrementally() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = corpus(tmp.path());
    let (ingested, imported) = (tmp.path().join("ingested"), tmp.path().join("imported"));
    let mut queries =
        lore::bench::read_queries(&root().join("corpora/handbook/questions.jsonl"), 10).unwrap();
    queries.extend(
        lore::bench::read_queries(&root().join("corpora/pubmedqa/queries.jsonl"), 10).unwrap(),
    );
    json(lore(&ingested).arg("ingest").arg(&corpus).arg("--json"));
    let first = spark_ingest(&corpus, &imported, &tmp.path().join("rows-1"));
    assert!(
        first["chunks"].as_u64().unwrap() > RECORDS as u64,
        "{first}"
    );
    assert_same(&ingested, &imported, &queries, "first run");

    // Five documents change, two disappear.
    for n in 0..5 {
        let path = corpus.join(format!("records/rec-{n:04}.md"));
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{text}\nRevised: see the erratum.\n")).unwrap();
    }
    for n in 5..7 {
        std::fs::remove_file(corpus.join(format!("records/rec-{n:04}.md"))).unwrap();
    }
    let report = json(lore(&ingested).arg("ingest").arg(&corpus).arg("--json"));
    assert_eq!(
        (report["updated"].as_u64(), report["removed"].as_u64()),
        (Some(5), Some(2))
    );
    spark_ingest(&corpus, &imported, &tmp.path().join("rows-2"));
    assert_same(&ingested, &imported, &queries, "after the changes");
}

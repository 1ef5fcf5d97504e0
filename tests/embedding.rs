//! Embedding parity: lore's encoder against reference vectors produced by
//! sentence-transformers (tests/fixtures/embedding_parity.json, made by
//! scripts/make_parity_fixture.py).

use lore::embed::Embedder;
use lore::embed::bert::{Backend, BertEmbedder, Int8};

use crate::util::{models_dir, root};

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

/// Every vector of `backend` is within cosine `least` of
/// sentence-transformers' own.
fn check(backend: Backend, least: f32) {
    let fixture: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root().join("tests/fixtures/embedding_parity.json")).unwrap(),
    )
    .unwrap();
    let texts: Vec<&str> = fixture["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let expected: Vec<Vec<f32>> = fixture["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect();
    // Batch size 3 mixes lengths across batches and exercises packing.
    let embedder =
        BertEmbedder::load_with(&models_dir().join("all-minilm-l6-v2"), 256, 3, backend).unwrap();
    let got = embedder.embed(&texts).unwrap();
    let min = expected
        .iter()
        .zip(&got)
        .map(|(a, b)| cosine(a, b))
        .fold(1.0f32, f32::min);
    eprintln!("{backend:?}: lowest cosine to sentence-transformers {min:.7}");
    for ((text, want), have) in texts.iter().zip(&expected).zip(&got) {
        assert_eq!(have.len(), 384);
        let norm: f32 = have.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "not unit length: {norm}");
        let cos = cosine(want, have);
        assert!(
            cos >= least,
            "{backend:?}: cosine {cos} for {:?}",
            &text[..text.len().min(40)]
        );
    }
}

#[test]
fn packed_encoder_matches_sentence_transformers() {
    check(Backend::Packed(Int8::OFF), 0.999);
}

#[test]
fn int8_documents_stay_close_to_sentence_transformers() {
    let int8 = Int8 {
        queries: true,
        documents: true,
    };
    check(Backend::Packed(int8), 0.995);
}

#[test]
fn reference_encoder_matches_sentence_transformers() {
    check(Backend::Reference, 0.999);
}

#[test]
fn embedding_is_independent_of_batch_composition() {
    let embedder = BertEmbedder::load(&models_dir().join("all-minilm-l6-v2"), 256, 4).unwrap();
    let alone = embedder.embed(&["the pager fires at night"]).unwrap();
    let mixed = embedder
        .embed(&[
            "a much longer text about databases and failover procedures",
            "the pager fires at night",
            "x",
        ])
        .unwrap();
    assert!(cosine(&alone[0], &mixed[1]) > 0.99999);
}

#[test]
fn int8_queries_stay_close_to_f32_and_documents_stay_f32() {
    let dir = models_dir().join("all-minilm-l6-v2");
    let f32 = BertEmbedder::load_with(&dir, 256, 4, Backend::Packed(Int8::OFF)).unwrap();
    let queries = Int8 {
        queries: true,
        documents: false,
    };
    let int8 = BertEmbedder::load_with(&dir, 256, 4, Backend::Packed(queries)).unwrap();
    let queries = [
        "how many vacation days carry over to next year",
        "Does vitamin D supplementation reduce fracture risk in older adults?",
        "#[derive(Debug)] on a struct with a generic field",
        "x",
    ];
    for query in queries {
        let exact = f32.embed_query(query).unwrap();
        let fast = int8.embed_query(query).unwrap();
        assert_ne!(exact, fast, "{query}: the query did not run in int8");
        let norm: f32 = fast.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "not unit length: {norm}");
        let cos = cosine(&exact, &fast);
        assert!(cos > 0.99, "{query}: cosine {cos} to the f32 vector");
        // Documents stay in f32 when only queries run in int8.
        assert_eq!(int8.embed(&[query]).unwrap()[0], exact, "{query}");
    }
    // A query past 64 tokens runs in f32.
    let long = "the pager fires at night and nobody answers it ".repeat(12);
    assert_eq!(
        int8.embed_query(&long).unwrap(),
        f32.embed_query(&long).unwrap()
    );
}

#[test]
fn int8_documents_do_not_depend_on_their_batch() {
    // Each row is quantized over its own range, so a text's vector is the
    // same alone, in a mixed batch, and in a batch split across threads.
    let dir = models_dir().join("all-minilm-l6-v2");
    let all = Int8 {
        queries: true,
        documents: true,
    };
    let int8 = BertEmbedder::load_with(&dir, 256, 64, Backend::Packed(all)).unwrap();
    let f32 = BertEmbedder::load_with(&dir, 256, 64, Backend::Packed(Int8::OFF)).unwrap();
    let text = "the pager fires at night and the on-call engineer acknowledges it";
    let alone = int8.embed(&[text]).unwrap().remove(0);
    let filler = "a much longer text about databases and failover procedures ".repeat(8);
    let mut batch = vec![filler.as_str(); 40];
    batch.insert(17, text);
    assert_eq!(int8.embed(&batch).unwrap()[17], alone);
    let exact = f32.embed(&[text]).unwrap().remove(0);
    assert_ne!(alone, exact, "the document did not run in int8");
    assert!(cosine(&alone, &exact) > 0.995);
}

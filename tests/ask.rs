//! `lore ask` with the light generator (SmolLM2-135M): determinism, bad
//! sizes as clear errors, abstention. Answer quality is measured with the
//! default model separately (it takes minutes on a CPU).

use crate::util::{fails, ingested, json, lore};

#[test]
fn same_seed_gives_the_same_answer() {
    let (_tmp, index) = ingested("corpora/tiny");
    let ask = || {
        let mut out = json(lore(&index).args([
            "ask",
            "How many grams of coffee go into an espresso?",
            "--generator",
            "light",
            "--temperature",
            "0.8",
            "--seed",
            "7",
            "--max-tokens",
            "24",
            "--json",
        ]));
        out.as_object_mut().unwrap().remove("timings");
        out
    };
    let first = ask();
    assert!(!first["answer"].as_str().unwrap().is_empty(), "{first}");
    assert_eq!(first["abstained"], false, "{first}");
    assert!(!first["retrieved"].as_array().unwrap().is_empty());
    assert_eq!(first, ask());
}

#[test]
fn oversized_question_and_tiny_window_are_clear_errors() {
    let (tmp, index) = ingested("corpora/tiny");
    // A question close to the documents and covered by them reaches the
    // prompt (one they do not cover is abstained on before it is sized).
    let question =
        "How many grams of coffee for 250 millilitres of water at 94 degrees Celsius? ".repeat(150);
    let (code, stderr) = fails(lore(&index).args(["ask", &question, "--generator", "light"]));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("do not fit"), "{stderr}");
    // Longer still: refused before anything is tokenized.
    let question = "please explain the grind size again ".repeat(600);
    let (code, stderr) = fails(lore(&index).args(["ask", &question, "--generator", "light"]));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("at most 16384"), "{stderr}");
    std::fs::write(
        tmp.path().join("lore.toml"),
        "[generator]\ncontext_tokens = 64\n",
    )
    .unwrap();
    let question = "How many grams of coffee go into an espresso?";
    let (code, stderr) = fails(lore(&index).args(["ask", question, "--generator", "light"]));
    assert_eq!(code, Some(2), "{stderr}");
}

#[test]
fn out_of_corpus_question_abstains() {
    let (_tmp, index) = ingested("corpora/tiny");
    let out = json(lore(&index).args([
        "ask",
        "Who won the 1998 FIFA World Cup?",
        "--generator",
        "light",
        "--json",
    ]));
    assert_eq!(out["abstained"], true, "{out}");
    assert!(out["citations"].as_array().unwrap().is_empty());
}

/// Questions on the corpus's subject that it does not cover are abstained
/// on before any model runs, with either generator; a question it covers
/// is still answered by both.
#[test]
fn a_near_domain_question_is_abstained_on_with_either_model() {
    let (_tmp, index) = ingested("corpora/tiny");
    let ask = |question: &str, generator: &str| {
        json(lore(&index).args([
            "ask",
            question,
            "--generator",
            generator,
            "--max-tokens",
            "32",
            "--json",
        ]))
    };
    for generator in ["light", "default"] {
        for question in [
            "How long should cold brew steep?",
            "Which grinder brand does the shop use for espresso?",
        ] {
            let out = ask(question, generator);
            assert_eq!(out["abstained"], true, "{generator}: {out}");
            assert_eq!(
                out["abstained_because"], "unsupported",
                "{generator}: {out}"
            );
            assert!(out["support"].as_f64().unwrap() < 0.5, "{out}");
        }
        let out = ask("How many grams of coffee go into an espresso?", generator);
        assert_eq!(out["abstained"], false, "{generator}: {out}");
        assert!(out["support"].as_f64().unwrap() >= 0.5, "{out}");
    }
}

//! The talk's techniques with the light generator (SmolLM2-135M) through
//! the CLI: constrained output (JSON Schema, choices, regex, grammar, the
//! cited schema, the default citation grammar) at high temperature, chain
//! of thought, self-consistency, reflection, few-shot and the expert
//! prompt, and `lore eval --answers`.

use std::path::Path;

use serde_json::Value;

use crate::util::{fails, ingested, json, lore, root};

const QUESTION: &str = "How many grams of coffee go into an espresso?";

fn ask(index: &Path, extra: &[&str]) -> Value {
    ask_within(index, "48", extra)
}

/// `ask` with room for `max_tokens` tokens.
fn ask_within(index: &Path, max_tokens: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "ask",
        QUESTION,
        "--generator",
        "light",
        "--max-tokens",
        max_tokens,
        "--json",
    ];
    args.extend_from_slice(extra);
    json(lore(index).args(&args))
}

/// Turns the name check off for the commands run in `dir` (their working
/// directory reads `lore.toml`): these tests sample hot to check what the
/// decoder lets through, and hot samples make up names the check would
/// withdraw, answer and all.
fn decoding_only(dir: &Path) {
    std::fs::write(dir.join("lore.toml"), "[generator]\ncheck_names = false\n").unwrap();
}

fn answer(out: &Value) -> &str {
    out["answer"].as_str().unwrap_or_else(|| panic!("{out}"))
}

#[test]
fn choices_and_regex_hold_at_any_temperature() {
    let (_tmp, index) = ingested("corpora/tiny");
    for seed in ["1", "2", "3"] {
        let out = ask(
            &index,
            &[
                "--choices",
                "yes,no,maybe",
                "--temperature",
                "1.5",
                "--seed",
                seed,
            ],
        );
        assert!(["yes", "no", "maybe"].contains(&answer(&out)), "{out}");
        let out = ask(
            &index,
            &[
                "--regex",
                "[0-9]{1,3} grams",
                "--temperature",
                "1.5",
                "--seed",
                seed,
            ],
        );
        let text = answer(&out);
        let (number, unit) = text.split_once(' ').unwrap_or_else(|| panic!("{out}"));
        assert!(
            number.len() <= 3 && number.chars().all(|c| c.is_ascii_digit()),
            "{out}"
        );
        assert_eq!(unit, "grams", "{out}");
    }
}

#[test]
fn json_schema_and_grammar_hold_at_any_temperature() {
    let (tmp, index) = ingested("corpora/tiny");
    let schema = tmp.path().join("schema.json");
    std::fs::write(&schema, lore::bench::bench_schema().to_string()).unwrap();
    let grammar = tmp.path().join("answer.lark");
    std::fs::write(
        &grammar,
        "start: \"Dose: \" NUM \" g\"\nNUM: /[1-9][0-9]?/\n",
    )
    .unwrap();
    for seed in ["1", "2", "3", "4"] {
        // Room for the longest output the schema allows (an 80-character
        // summary may take 80 tokens when sampled wildly): the check is on
        // what the constraint admits, not on where a budget cut it.
        let out = ask_within(
            &index,
            "256",
            &[
                "--schema",
                schema.to_str().unwrap(),
                "--temperature",
                "1.2",
                "--seed",
                seed,
            ],
        );
        lore::bench::check_bench_output(answer(&out)).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert!(out["json"].is_object(), "{out}");
        let out = ask(
            &index,
            &[
                "--grammar",
                grammar.to_str().unwrap(),
                "--temperature",
                "1.2",
                "--seed",
                seed,
            ],
        );
        let dose = answer(&out)
            .strip_prefix("Dose: ")
            .and_then(|r| r.strip_suffix(" g"))
            .unwrap_or_else(|| panic!("{out}"));
        assert!(
            dose.parse::<u32>().is_ok_and(|n| (1..100).contains(&n)),
            "{out}"
        );
    }
}

#[test]
fn the_cited_schema_cites_only_given_sources() {
    let (_tmp, index) = ingested("corpora/tiny");
    for seed in ["1", "2"] {
        // Room for the longest answer the schema admits (1,000 characters,
        // which a wild sample may spend a token each on): the check is on
        // what the constraint allows, not on where a budget cut the JSON.
        let out = ask_within(
            &index,
            "1100",
            &["--schema", "cited", "--temperature", "1.0", "--seed", seed],
        );
        let parsed = &out["json"];
        assert!(parsed["answer"].is_string(), "{out}");
        let sources = out["retrieved"].as_array().unwrap().len() as u64;
        for n in parsed["citations"].as_array().unwrap() {
            assert!((1..=sources).contains(&n.as_u64().unwrap()), "{out}");
        }
        assert!(
            out["invalid_citations"].as_array().unwrap().is_empty(),
            "{out}"
        );
    }
}

/// A question the documents cannot answer gets the abstention in the cited
/// JSON's own shape, without asking the model.
#[test]
fn the_cited_schema_abstains_in_its_own_shape() {
    let (_tmp, index) = ingested("corpora/tiny");
    let out = json(lore(&index).args([
        "ask",
        "Who won the 1998 FIFA World Cup?",
        "--generator",
        "light",
        "--schema",
        "cited",
        "--json",
    ]));
    assert_eq!(out["abstained"], true, "{out}");
    assert!(out["json"]["answer"].is_string(), "{out}");
    assert_eq!(out["json"]["citations"], serde_json::json!([]), "{out}");
    let parsed: Value = serde_json::from_str(answer(&out)).unwrap();
    assert_eq!(parsed, out["json"], "{out}");
}

/// Every bracket of a default answer is a citation of a given source, even
/// when sampling wildly: the grammar allows nothing else.
#[test]
fn default_answers_cite_only_given_sources_in_brackets() {
    let (_tmp, index) = ingested("corpora/tiny");
    for seed in ["1", "2", "3"] {
        let out = ask(&index, &["--temperature", "1.5", "--seed", seed]);
        let text = answer(&out);
        assert_citations_given(&out);
        assert!(
            text.starts_with("According to [") || out["abstained"] == true,
            "{out}"
        );
    }
}

/// Every citation of the answer in `out` names a source it was given.
fn assert_citations_given(out: &Value) {
    assert!(
        out["invalid_citations"].as_array().unwrap().is_empty(),
        "{out}"
    );
    let sources = out["retrieved"].as_array().unwrap().len();
    for n in marks_outside_code(answer(out)).into_iter().flatten() {
        assert!((1..=sources).contains(&n), "{out}");
    }
}

/// The numbers of every citation mark outside code spans: each `[` that
/// opens on a digit, read up to its `]` (the grammar allows nothing else
/// there, so a mark that does not parse fails the test).
fn marks_outside_code(text: &str) -> Vec<Vec<usize>> {
    let mut marks = Vec::new();
    for prose in text.split('`').step_by(2) {
        let mut rest = prose;
        while let Some(open) = rest.find('[') {
            rest = &rest[open + 1..];
            if !rest.starts_with(|c: char| c.is_ascii_digit()) {
                continue;
            }
            let inside = &rest[..rest.find(']').unwrap_or(rest.len())];
            let numbers = inside
                .split(", ")
                .map(|n| n.parse().unwrap_or_else(|_| panic!("[{inside}] in {text}")));
            marks.push(numbers.collect());
        }
    }
    marks
}

/// The llama (SmolLM2) and gemma3 (Gemma 3 270M) families answer under
/// the citation grammar too, with their own chat templates and stop
/// tokens (qwen2, the default model, runs through the other tests).
#[test]
fn every_architecture_answers_under_the_citation_grammar() {
    let (tmp, index) = ingested("corpora/tiny");
    decoding_only(tmp.path());
    for generator in ["light", "gemma"] {
        for seed in ["1", "2"] {
            let out = json(lore(&index).args([
                "ask",
                QUESTION,
                "--generator",
                generator,
                "--max-tokens",
                "48",
                "--temperature",
                "1.2",
                "--seed",
                seed,
                "--json",
            ]));
            assert_citations_given(&out);
            assert!(
                answer(&out).starts_with("According to ["),
                "{generator}: {out}"
            );
        }
    }
}

/// Quote first, sampled hot: every quote is its source's own words at the
/// byte range given, and the answer after the quotes still cites only
/// given sources.
#[test]
fn quotes_are_substrings_of_their_sources() {
    let (tmp, index) = ingested("corpora/tiny");
    decoding_only(tmp.path());
    let mut quotes = 0;
    for seed in ["1", "2", "3"] {
        let out = ask(
            &index,
            &[
                "--technique",
                "quote",
                "--temperature",
                "1.5",
                "--seed",
                seed,
            ],
        );
        assert_citations_given(&out);
        // The quotes are read off: the answer is what follows them.
        assert!(answer(&out).starts_with("According to ["), "{out}");
        let retrieved = out["retrieved"].as_array().unwrap();
        for quote in out["quotes"].as_array().into_iter().flatten() {
            let n = quote["n"].as_u64().unwrap() as usize;
            let source = &retrieved[n - 1];
            assert_eq!(quote["chunk_id"], source["chunk_id"], "{out}");
            let text = source["text"].as_str().unwrap();
            let (start, end) = (
                quote["range"]["start"].as_u64().unwrap() as usize,
                quote["range"]["end"].as_u64().unwrap() as usize,
            );
            assert_eq!(&text[start..end], quote["text"].as_str().unwrap(), "{out}");
            quotes += 1;
        }
    }
    assert!(quotes > 0, "no quote in three answers");
}

#[test]
fn code_in_answers_survives_and_every_citation_is_a_given_source() {
    let tmp = tempfile::tempdir().unwrap();
    let index = tmp.path().join("index");
    decoding_only(tmp.path());
    json(
        lore(&index)
            .args(["ingest", "--json"])
            .arg(root().join("tests/fixtures/code-docs")),
    );
    let code = [
        "#[derive",
        "#[cfg",
        "[u8",
        "[dependencies]",
        "v[0]",
        "[T; N]",
    ];
    let mut with_code = Vec::new();
    for question in [
        "Which attribute lets a struct be printed with {:?}?",
        "How is an array of four bytes declared, and how is its first element read?",
        "Under which table of Cargo.toml are dependencies listed?",
    ] {
        for seed in ["1", "2"] {
            let out = json(lore(&index).args([
                "ask",
                question,
                "--max-tokens",
                "64",
                "--temperature",
                "1.2",
                "--seed",
                seed,
                "--json",
            ]));
            let text = answer(&out);
            assert_citations_given(&out);
            // An attribute is never turned into a citation.
            assert!(!text.contains("#[1]") && !text.contains("#[2]"), "{text}");
            if code.iter().any(|c| text.contains(c)) {
                with_code.push(text.to_string());
            }
        }
    }
    assert!(
        with_code.len() >= 2,
        "the code of the sources should come through: {with_code:?}"
    );
}

#[test]
fn chain_of_thought_returns_its_reasoning_apart() {
    let (_tmp, index) = ingested("corpora/tiny");
    let out = ask(&index, &["--technique", "cot", "--choices", "yes,no"]);
    assert!(["yes", "no"].contains(&answer(&out)), "{out}");
    assert!(out["reasoning"].is_string(), "{out}");
    let out = ask(&index, &["--technique", "cot"]);
    let text = answer(&out);
    assert!(!text.contains("Answer:"), "{out}");
    assert!(out["reasoning"].is_string(), "{out}");
}

#[test]
fn self_consistency_votes_over_samples() {
    let (_tmp, index) = ingested("corpora/tiny");
    let out = ask(&index, &["--samples", "3", "--choices", "yes,no,maybe"]);
    let votes = out["votes"].as_array().unwrap_or_else(|| panic!("{out}"));
    let total: u64 = votes.iter().map(|v| v["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 3, "{out}");
    assert_eq!(answer(&out), votes[0]["answer"].as_str().unwrap(), "{out}");
    let counts: Vec<u64> = votes.iter().map(|v| v["count"].as_u64().unwrap()).collect();
    assert!(counts.windows(2).all(|w| w[0] >= w[1]), "{out}");
    // The same seed gives the same vote.
    let again = ask(&index, &["--samples", "3", "--choices", "yes,no,maybe"]);
    assert_eq!(out["votes"], again["votes"]);
}

#[test]
fn a_vote_without_a_majority_keeps_the_greedy_answer() {
    let (_tmp, index) = ingested("corpora/tiny");
    let greedy = ask(&index, &[]);
    let voted = ask(&index, &["--samples", "2"]);
    let votes = voted["votes"]
        .as_array()
        .unwrap_or_else(|| panic!("{voted}"));
    assert!(
        votes.iter().any(|v| v["answer"] == greedy["answer"]),
        "the greedy answer is one of the samples: {voted}"
    );
    // Two samples never make a majority against the first: it is greedy.
    assert_eq!(answer(&voted), answer(&greedy), "{voted}");
}

#[test]
fn reflection_reports_its_verdict() {
    let (_tmp, index) = ingested("corpora/tiny");
    let out = ask(&index, &["--reflect"]);
    let reflection = &out["reflection"];
    let verdict = reflection["verdict"]
        .as_str()
        .unwrap_or_else(|| panic!("{out}"));
    assert!(["keep", "revise", "abstain"].contains(&verdict), "{out}");
    assert!(reflection["draft"].is_string(), "{out}");
    if verdict == "abstain" {
        assert_eq!(out["abstained"], true, "{out}");
    }
    let out = ask(&index, &["--reflect", "--choices", "yes,no"]);
    assert!(["yes", "no"].contains(&answer(&out)), "{out}");
    assert_ne!(out["reflection"]["verdict"], "abstain", "{out}");
}

#[test]
fn few_shot_and_expert_prompts_answer() {
    let (_tmp, index) = ingested("corpora/tiny");
    let out = ask(
        &index,
        &["--technique", "few-shot", "--technique", "expert"],
    );
    assert!(!answer(&out).is_empty(), "{out}");
    assert!(
        out["invalid_citations"].as_array().unwrap().is_empty(),
        "{out}"
    );
}

#[test]
fn bad_constraints_are_clear_errors() {
    let (tmp, index) = ingested("corpora/tiny");
    let grammar = tmp.path().join("bad.lark");
    std::fs::write(&grammar, "start: (((").unwrap();
    let cases: Vec<Vec<&str>> = vec![
        vec!["--regex", "(unclosed"],
        vec!["--grammar", grammar.to_str().unwrap()],
        vec!["--choices", "yes", "--regex", "no"],
        vec!["--schema", "no-such-file.json"],
        vec!["--samples", "99"],
        // 16 × 2 × 256 tokens: past generator.max_request_tokens.
        vec![
            "--samples",
            "16",
            "--technique",
            "cot",
            "--max-tokens",
            "256",
        ],
    ];
    for case in cases {
        let mut args = vec!["ask", QUESTION, "--generator", "light"];
        args.extend(case.iter().copied());
        let (code, stderr) = fails(lore(&index).args(&args));
        assert_eq!(code, Some(2), "{case:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{case:?}: {stderr}");
    }
}

#[test]
fn eval_answers_scores_every_technique() {
    let (_tmp, index) = ingested("corpora/tiny");
    let data = root().join("tests/fixtures/coffee-answers");
    let out = crate::util::run_ok(lore(&index).args([
        "eval",
        data.to_str().unwrap(),
        "--answers",
        "--generator",
        "light",
        "--technique",
        "plain",
        "--technique",
        "choices",
        "--technique",
        "sc3+choices",
        "--max-tokens",
        "32",
        "--json",
    ]));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = lines
        .iter()
        .map(|l| l["technique"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["plain", "choices", "sc3+choices"]);
    for line in &lines {
        assert_eq!(line["n"], 3, "{line}");
        for key in ["accuracy", "macro_f1", "seconds"] {
            let v = line[key].as_f64().unwrap();
            assert!(v >= 0.0 && (key == "seconds" || v <= 1.0), "{line}");
        }
    }
    // Constrained to the choices, every answer names one.
    assert_eq!(lines[1]["unanswered"], 0, "{}", lines[1]);
}

/// Every option over HTTP: `/v1/ask` takes the CLI's constraint fields and
/// the techniques; chat completions take OpenAI's `response_format`; bad
/// constraints are 400s with a JSON error, never a 5xx.
#[test]
fn every_option_is_reachable_over_http() {
    use crate::serve::{error_code, http, start_with};
    let (_tmp, index) = ingested("corpora/tiny");
    let server = start_with(&index, "", &[]);
    // One generation at a time and no queue: the previous request's turn
    // may still be closing, so retry a 429 as a client would.
    let post = |path: &str, body: Value| {
        for _ in 0..40 {
            let body = body.to_string();
            let (status, _, reply) = http(&server.addr, "POST", path, Some("r-key"), Some(&body));
            if status != 429 {
                return (status, reply);
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        panic!("{path} stayed busy");
    };
    let (status, reply) = post(
        "/v1/ask",
        serde_json::json!({
            "question": QUESTION, "max_tokens": 32, "choices": ["yes", "no"],
            "techniques": {"cot": true, "samples": 2, "reflect": true, "few_shot": true, "expert": true}
        }),
    );
    assert_eq!(status, 200, "{reply}");
    let out: Value = serde_json::from_str(&reply).unwrap();
    assert!(["yes", "no"].contains(&answer(&out)), "{out}");
    let total: u64 = out["votes"]
        .as_array()
        .unwrap_or_else(|| panic!("{out}"))
        .iter()
        .map(|v| v["count"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 2, "{out}");
    assert!(
        out["reasoning"].is_string() && out["reflection"]["verdict"].is_string(),
        "{out}"
    );

    let schema = lore::bench::bench_schema();
    let (status, reply) = post(
        "/v1/ask",
        serde_json::json!({"question": QUESTION, "max_tokens": 96, "schema": schema, "temperature": 1.0}),
    );
    assert_eq!(status, 200, "{reply}");
    let out: Value = serde_json::from_str(&reply).unwrap();
    lore::bench::check_bench_output(answer(&out)).unwrap_or_else(|e| panic!("{e}: {out}"));

    let (status, reply) = post(
        "/v1/chat/completions",
        serde_json::json!({
            "model": "lore", "max_tokens": 96, "temperature": 0.8,
            "messages": [{"role": "user", "content": QUESTION}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "triage", "strict": true, "schema": schema}}
        }),
    );
    assert_eq!(status, 200, "{reply}");
    let out: Value = serde_json::from_str(&reply).unwrap();
    let content = out["choices"][0]["message"]["content"].as_str().unwrap();
    lore::bench::check_bench_output(content).unwrap_or_else(|e| panic!("{e}: {content}"));
    let (status, reply) = post(
        "/v1/chat/completions",
        serde_json::json!({
            "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 48,
            "response_format": {"type": "json_object"}
        }),
    );
    assert_eq!(status, 200, "{reply}");
    let out: Value = serde_json::from_str(&reply).unwrap();
    let content = out["choices"][0]["message"]["content"].as_str().unwrap();
    // Within 48 tokens the object may be cut short, but it starts as one.
    assert!(content.starts_with('{'), "{content}");

    for bad in [
        serde_json::json!({"question": QUESTION, "regex": "(unclosed"}),
        serde_json::json!({"question": QUESTION, "schema": "no-such-builtin"}),
        serde_json::json!({"question": QUESTION, "schema": {"type": "object"}, "choices": ["a"]}),
        serde_json::json!({"question": QUESTION, "choices": []}),
        serde_json::json!({"question": QUESTION, "grammar": "start: ((("}),
        serde_json::json!({"question": QUESTION, "grammar": "start: start"}),
        serde_json::json!({"question": QUESTION, "techniques": {"samples": 999}}),
        serde_json::json!({"question": QUESTION, "techniques": {"magic": true}}),
        serde_json::json!({"question": QUESTION, "max_tokens": 256, "techniques": {"samples": 16, "cot": true}}),
    ] {
        let (status, reply) = post("/v1/ask", bad.clone());
        assert_eq!(status, 400, "{bad}: {reply}");
        assert!(!error_code(&reply).is_empty(), "{bad}: {reply}");
    }
}

#[test]
fn eval_qa_with_samples_reports_them_and_the_most_a_vote_could_reach() {
    let (_tmp, index) = ingested("corpora/tiny");
    let qa = root().join("tests/fixtures/tiny-qa.jsonl");
    let report = json(
        lore(&index)
            .args(["eval", "--generator", "light", "--max-tokens", "48"])
            .args(["--json", "--limit", "1", "--technique", "sc2", "--qa"])
            .arg(&qa),
    );
    let row = &report["rows"][0];
    let votes = row["votes"]
        .as_array()
        .unwrap_or_else(|| panic!("{report}"));
    let total: u64 = votes.iter().map(|v| v["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 2, "{report}");
    // Whole words, any case and punctuation, as the fact is scored.
    let words = |text: &str| {
        let words: Vec<String> = text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        format!(" {} ", words.join(" "))
    };
    let sampled = votes
        .iter()
        .any(|v| words(v["answer"].as_str().unwrap()).contains(" 6 45 "));
    assert_eq!(row["sampled_fact"], sampled, "{report}");
    assert_eq!(
        report["sampled_fact"],
        if sampled { 1.0 } else { 0.0 },
        "{report}"
    );
}

#[test]
fn eval_qa_scores_facts_sources_retrieval_and_abstention() {
    let (_tmp, index) = ingested("corpora/tiny");
    let qa = root().join("tests/fixtures/tiny-qa.jsonl");
    let out = lore(&index)
        .args([
            "eval",
            "--generator",
            "light",
            "--max-tokens",
            "48",
            "-k",
            "2",
            "--json",
            "--qa",
        ])
        .arg(&qa)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["technique"], "plain", "{report}");
    assert_eq!(report["k"], 2, "{report}");
    // No chunks, or too many, is a usage error, not an empty report.
    for bad in ["0", "51"] {
        let (code, stderr) = fails(
            lore(&index)
                .args(["eval", "--generator", "light", "-k", bad, "--qa"])
                .arg(&qa),
        );
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains("out of range"), "{stderr}");
    }
    assert_eq!(report["answerable"], 3, "{report}");
    assert_eq!(report["far"], 1, "{report}");
    assert_eq!(report["near"], 1, "{report}");
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 5);
    // The follow-up was asked after its earlier question: rewritten to
    // stand alone, and counted apart.
    assert_eq!(report["follow_ups"], 1, "{report}");
    assert_eq!(rows[4]["follow_up"], true, "{report}");
    assert!(
        rows[..4].iter().all(|r| r["follow_up"] == false),
        "{report}"
    );
    let standalone = rows[4]["standalone_question"].as_str().unwrap_or_default();
    assert!(!standalone.trim().is_empty(), "{report}");
    let said = rows[4]["fact"] == true;
    assert_eq!(
        report["follow_up_fact"],
        if said { 1.0 } else { 0.0 },
        "{report}"
    );
    // Retrieval finds the staff handbook for both answerable questions,
    // and the chunks given hold their facts; `fact_given` is the share of
    // rows that say so.
    assert_eq!(report["retrieved"], 1.0, "{report}");
    assert!(
        rows[..2].iter().all(|r| r["fact_given"] == true),
        "{report}"
    );
    let given = rows.iter().filter(|r| r["fact_given"] == true).count();
    assert_eq!(report["fact_given"], given as f64 / 3.0, "{report}");
    assert!(
        rows[2..4].iter().all(|r| r["fact_given"] == false),
        "{report}"
    );
    // The far question is abstained on (nothing related is found), and
    // the row says why; a row that did not abstain gives no reason.
    assert_eq!(rows[2]["abstained"], true, "{report}");
    assert!(
        ["no_match", "unsupported"].contains(&rows[2]["abstained_because"].as_str().unwrap()),
        "{report}"
    );
    for row in rows {
        assert_eq!(
            row["abstained"] == true,
            row.get("abstained_because").is_some(),
            "{row}"
        );
        // Only an answer the model wrote can be withdrawn after it.
        if row.get("withdrawn_fact").is_some() {
            let because = row["abstained_because"].as_str().unwrap();
            assert!(["unsourced", "reflection"].contains(&because), "{row}");
        }
    }
    let withdrawn = rows
        .iter()
        .filter(|r| r.get("withdrawn_fact").is_some())
        .count();
    assert_eq!(report["withdrawn"], withdrawn, "{report}");
    // Each score agrees with its own answer's text.
    for (row, fact) in rows[..2].iter().zip(["6:45", "two weeks"]) {
        let answer = row["answer"].as_str().unwrap().to_lowercase();
        let said = answer.contains(fact) && row["abstained"] == false;
        assert_eq!(row["fact"], said, "{row}");
    }
    // A QA file with a bad line is refused, naming the line.
    let bad = _tmp.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"question\": \"ok?\"}\n{\"question\": 3}\n").unwrap();
    let (code, stderr) = fails(lore(&index).args(["eval", "--qa"]).arg(&bad));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("bad.jsonl:2"), "{stderr}");
}

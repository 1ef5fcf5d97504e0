//! Conversations: a follow-up that means nothing alone ("And how fast for
//! SEV2?") is rewritten from the history, retrieves the right document and
//! is answered from it, a pronoun the rewrite left is replaced by what it
//! stands for, through `/v1/ask` with `history` and through chat
//! completions with several messages; a history far longer than the
//! context is cut to fit, oldest turns first. `lore chat` does the same
//! at a terminal (driven here through a pipe).

use std::io::Write;
use std::process::Stdio;

use serde_json::{Value, json};

use crate::serve::{Server, http, start_full};
use crate::util::ingested;

const KEY: &str = "r-key";

fn server() -> (tempfile::TempDir, Server) {
    let (tmp, index) = ingested("corpora/handbook/docs");
    let server = start_full(&index, "", &[], Some("read:r-key"), "default");
    (tmp, server)
}

fn post(server: &Server, path: &str, body: &Value) -> Value {
    let (code, _, reply) = http(
        &server.addr,
        "POST",
        path,
        Some(KEY),
        Some(&body.to_string()),
    );
    assert_eq!(code, 200, "{path}: {reply}");
    serde_json::from_str(&reply).unwrap()
}

const FIRST: &str = "How quickly must a SEV1 page be acknowledged?";
const FIRST_ANSWER: &str = "According to [1], a SEV1 page must be acknowledged within 5 \
                            minutes, around the clock.\n\nSources:\n[1] paging-policy.md";
const FOLLOW_UP: &str = "And how fast for SEV2?";

/// The rewrite names SEV2, the paging policy is retrieved first and
/// cited, and the answer gives its SEV2 window.
fn assert_answered_from_history(standalone: &str, retrieved: &Value, cited: &Value, answer: &str) {
    assert!(standalone.to_uppercase().contains("SEV2"), "{standalone}");
    assert!(
        retrieved[0]["path"]
            .as_str()
            .unwrap()
            .ends_with("paging-policy.md"),
        "{retrieved}"
    );
    assert!(
        cited
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["path"].as_str().unwrap().ends_with("paging-policy.md")),
        "{cited}"
    );
    assert!(answer.contains("15"), "{answer}");
}

#[test]
fn a_follow_up_is_answered_from_the_history() {
    let (_tmp, server) = server();
    let history = json!([
        {"role": "user", "content": FIRST},
        {"role": "assistant", "content": FIRST_ANSWER},
    ]);

    // Without the history the follow-up is not about paging at all.
    let alone = post(&server, "/v1/ask", &json!({"question": FOLLOW_UP}));
    assert!(alone.get("standalone_question").is_none(), "{alone}");

    let asked = post(
        &server,
        "/v1/ask",
        &json!({"question": FOLLOW_UP, "history": history}),
    );
    let standalone = asked["standalone_question"].as_str().unwrap();
    eprintln!(
        "rewrite: {standalone:?} in {:.0} ms ({} prompt tokens)",
        asked["timings"]["rewrite_ms"], asked["timings"]["rewrite_prompt_tokens"]
    );
    assert_answered_from_history(
        standalone,
        &asked["retrieved"],
        &asked["citations"],
        asked["answer"].as_str().unwrap(),
    );

    // A pronoun the rewrite may hand back unchanged still ends up named:
    // the standalone question says what "it" was.
    let pronoun = post(
        &server,
        "/v1/ask",
        &json!({
            "question": "Can I ask for it early?",
            "history": [
                {"role": "user", "content": "What is the laptop refresh cycle?"},
                {"role": "assistant", "content": "Laptops are refreshed every three years [1]."},
            ],
            "max_tokens": 16,
        }),
    );
    let standalone = pronoun["standalone_question"].as_str().unwrap();
    assert!(standalone.contains("refresh"), "{standalone}");
    assert!(!standalone.contains(" it "), "{standalone}");

    // The same conversation as OpenAI messages.
    let chat = post(
        &server,
        "/v1/chat/completions",
        &json!({"model": "lore", "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": FIRST},
            {"role": "assistant", "content": FIRST_ANSWER},
            {"role": "user", "content": FOLLOW_UP},
        ]}),
    );
    let lore = &chat["lore"];
    assert_answered_from_history(
        lore["standalone_question"].as_str().unwrap(),
        &lore["retrieved"],
        &lore["citations"],
        chat["choices"][0]["message"]["content"].as_str().unwrap(),
    );
}

#[test]
fn a_long_history_never_overflows_the_context() {
    let (_tmp, server) = server();
    // ~800 KB of turns: hundreds of times the 2,048-token context.
    let filler = "The quarterly planning notes cover budgets, hiring and travel. ".repeat(60);
    let mut turns: Vec<Value> = (0..200)
        .map(|i| {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            json!({"role": role, "content": format!("turn {i}: {filler}")})
        })
        .collect();
    turns.push(json!({"role": "user", "content": FIRST}));
    turns.push(json!({"role": "assistant", "content": FIRST_ANSWER}));

    let asked = post(
        &server,
        "/v1/ask",
        &json!({"question": FOLLOW_UP, "history": turns, "max_tokens": 48}),
    );
    let timings = &asked["timings"];
    let rewrite_tokens = timings["rewrite_prompt_tokens"].as_u64().unwrap();
    assert!(
        rewrite_tokens > 0 && rewrite_tokens + 64 <= 2048,
        "{timings}"
    );
    assert!(
        timings["prompt_tokens"].as_u64().unwrap() <= 2048,
        "{timings}"
    );
    // The newest turns were kept: the rewrite still knows it is about paging.
    let standalone = asked["standalone_question"].as_str().unwrap();
    assert!(standalone.to_uppercase().contains("SEV2"), "{standalone}");

    let mut messages = turns.clone();
    messages.push(json!({"role": "user", "content": FOLLOW_UP}));
    let chat = post(
        &server,
        "/v1/chat/completions",
        &json!({"messages": messages, "max_tokens": 48}),
    );
    assert!(chat["lore"]["standalone_question"].is_string(), "{chat}");
}

#[test]
fn lore_chat_keeps_the_conversation() {
    let (_tmp, index) = ingested("corpora/handbook/docs");
    let mut child = crate::util::lore(&index)
        .args(["chat", "--generator", "default", "--history-file", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(
        stdin,
        "{FIRST}\n{FOLLOW_UP}\n/sources\n/reset\n/bogus\n/quit"
    )
    .unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("(searched for:"), "{stdout}");
    assert!(stdout.to_uppercase().contains("SEV2"), "{stdout}");
    assert!(stdout.matches("Sources:").count() >= 2, "{stdout}");
    assert!(stdout.contains("paging-policy.md"), "{stdout}");
    assert!(stdout.contains("(conversation cleared)"), "{stdout}");
    assert!(stdout.contains("unknown command /bogus"), "{stdout}");
}

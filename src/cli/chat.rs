//! `lore chat`: an interactive session over the documents. Each question
//! goes to [`lore::Lore::ask`] (an engine here or the running server) with the earlier
//! turns as its history, so follow-ups are rewritten to stand alone before
//! retrieval; the answer streams, its sources follow. Line editing and the
//! typed-line history come from rustyline.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use lore::engine::Turn;
use lore::wire::AskBody;
use lore::{AskRequest, AskResponse, Lore};
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

use super::ask::{print_sources, with_generator};
use super::{CLI_ACTOR, Global, open_backend};

#[derive(Args)]
pub struct ChatArgs {
    /// Chunks given to the model for each answer.
    #[arg(short, default_value_t = 3)]
    pub k: usize,
    /// `default`, `light`, `large`, `gemma`, or a GGUF path (env LORE_GENERATOR).
    #[arg(long)]
    pub generator: Option<String>,
    /// Longest answer in tokens.
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Keep the typed lines here between sessions (default
    /// ~/.cache/lore/chat-history; `-` keeps none).
    #[arg(long, value_name = "FILE")]
    pub history_file: Option<PathBuf>,
}

const HELP: &str = "Ask anything about the documents; follow-ups use the conversation.\n\
  /sources  the chunks the last answer was given\n\
  /reset    forget the conversation\n\
  /quit     leave (or Ctrl-D)";

/// Runs the session until /quit or end of input.
pub fn run(global: &Global, args: ChatArgs) -> anyhow::Result<()> {
    let config = with_generator(global, args.generator.as_ref())?;
    let collections = config.collections();
    let backend = open_backend(config, true, CLI_ACTOR)?;
    let mut editor = DefaultEditor::new().context("while starting the line editor")?;
    let history_file = history_file(args.history_file);
    if let Some(file) = &history_file {
        // A missing file is the first session.
        let _ = editor.load_history(file);
    }
    eprintln!("lore chat — {HELP}");
    let mut turns: Vec<Turn> = Vec::new();
    let mut last: Option<AskResponse> = None;
    loop {
        let line = match editor.readline("you> ") {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(err) => return Err(err).context("while reading input"),
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(line);
        match line {
            "/quit" | "/exit" => break,
            "/help" => println!("{HELP}"),
            "/reset" => {
                turns.clear();
                last = None;
                println!("(conversation cleared)");
            }
            "/sources" => show_retrieved(last.as_ref()),
            command if command.starts_with('/') => {
                println!("unknown command {command}; /help lists them");
            }
            question => {
                let mut request = AskBody {
                    question: question.to_string(),
                    k: Some(args.k),
                    max_tokens: args.max_tokens,
                    history: turns.clone(),
                    ..AskBody::default()
                }
                .into_request()?;
                request.collections = collections.clone();
                match answer(backend.as_ref(), &request) {
                    Ok(response) => {
                        turns.push(Turn::user(question));
                        turns.push(Turn::assistant(response.answer.clone()));
                        last = Some(response);
                    }
                    Err(err) => eprintln!("lore: error: {err:#}"),
                }
            }
        }
    }
    if let Some(file) = &history_file {
        if let Some(dir) = file.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(err) = editor.save_history(file) {
            tracing::warn!(file = %file.display(), error = %err, "cannot save the chat history");
        }
    }
    Ok(())
}

/// Streams one answer, then its sources.
fn answer(backend: &dyn Lore, request: &AskRequest) -> anyhow::Result<AskResponse> {
    let mut out = std::io::stdout();
    let mut on_text = |text: &str| {
        out.write_all(text.as_bytes())
            .and_then(|_| out.flush())
            .is_ok()
    };
    let response = backend.ask(request, &mut on_text)?;
    println!();
    if let Some(standalone) = &response.standalone_question {
        println!("(searched for: {standalone})");
    }
    print_sources(&response);
    println!();
    Ok(response)
}

/// `/sources`: every chunk the last answer was given.
fn show_retrieved(last: Option<&AskResponse>) {
    let Some(response) = last else {
        println!("(no answer yet)");
        return;
    };
    for (n, hit) in response.retrieved.iter().enumerate() {
        let text: String = hit.text.split_whitespace().collect::<Vec<_>>().join(" ");
        let preview: String = text.chars().take(160).collect();
        println!("[{}] {} ({:.3})\n    {preview}", n + 1, hit.path, hit.score);
    }
}

/// Where typed lines are kept: the flag, `-` for nowhere, else the cache.
fn history_file(flag: Option<PathBuf>) -> Option<PathBuf> {
    match flag {
        Some(path) if path.as_os_str() == "-" => None,
        Some(path) => Some(path),
        None => std::env::var_os("HOME").map(|home| {
            PathBuf::from(home)
                .join(".cache")
                .join("lore")
                .join("chat-history")
        }),
    }
}

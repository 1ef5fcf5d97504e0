//! `lore ask`: one answer, streamed, with its sources, the constraint
//! and techniques it was asked with.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use lore::engine::{Techniques, technique};
use lore::search::Filter;
use lore::wire::AskBody;
use lore::{Config, Error};

use super::{CLI_ACTOR, Global, config, open_backend, print_json};
#[derive(Args)]
pub struct AskArgs {
    /// The question.
    question: String,
    /// Chunks given to the model (more context, slower prompt processing).
    #[arg(short, default_value_t = 3)]
    k: usize,
    /// Only documents matching KEY=VALUE (as for search).
    #[arg(long, value_name = "KEY=VALUE")]
    filter: Vec<String>,
    /// `default`, `light`, `large`, `gemma`, or a GGUF path (env LORE_GENERATOR).
    #[arg(long)]
    generator: Option<String>,
    /// Sampling temperature (0 = greedy).
    #[arg(long)]
    temperature: Option<f64>,
    /// Nucleus sampling mass.
    #[arg(long)]
    top_p: Option<f64>,
    /// Random seed: the same seed and question give the same answer.
    #[arg(long)]
    seed: Option<u64>,
    /// Longest answer in tokens.
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Print the answer once it is complete instead of streaming it.
    #[arg(long)]
    no_stream: bool,
    /// Print the answer, citations, retrieved chunks and timings as JSON.
    #[arg(long)]
    json: bool,
    /// Answer from this one document, whole (a path or a document id),
    /// instead of from retrieved chunks; a document too long for one
    /// prompt is read part by part and the parts' answers combined.
    #[arg(long, value_name = "PATH|ID")]
    document: Option<String>,
    #[command(flatten)]
    constraint: ConstraintArgs,
    #[command(flatten)]
    techniques: TechniqueArgs,
}

/// What the answer must match (at most one; decoded under it, so the
/// output matches every time).
#[derive(Args)]
pub struct ConstraintArgs {
    /// Answer as JSON valid against the JSON Schema in FILE; `cited` for
    /// the built-in {"answer", "citations"} schema.
    #[arg(long, value_name = "FILE|cited", help_heading = "Constrained output")]
    schema: Option<String>,
    /// Answer with exactly one of these (comma-separated).
    #[arg(long, value_delimiter = ',', num_args = 1.., value_name = "A,B,..", help_heading = "Constrained output")]
    choices: Option<Vec<String>>,
    /// Answer matching this regular expression, whole.
    #[arg(long, value_name = "REGEX", help_heading = "Constrained output")]
    regex: Option<String>,
    /// Answer following the Lark grammar in FILE (llguidance's dialect).
    #[arg(long, value_name = "FILE", help_heading = "Constrained output")]
    grammar: Option<PathBuf>,
}

/// The prompting techniques of the "State of GPT" talk.
#[derive(Args)]
pub struct TechniqueArgs {
    /// Prompting techniques to turn on (repeatable; `reflect` is also
    /// --reflect). Quotes are shown after the answer, reasoning apart with
    /// --json.
    #[arg(long, value_parser = technique_names(), help_heading = "Techniques")]
    technique: Vec<String>,
    /// Self-consistency: sample N answers (seeds from --seed) and return
    /// the majority; the prompt is processed once.
    #[arg(long, value_name = "N", help_heading = "Techniques", value_parser = clap::value_parser!(u16).range(1..=lore::MAX_SAMPLES as i64))]
    samples: Option<u16>,
    /// Reflection: check the answer against the sources, then keep,
    /// revise or abstain (the verdict is reported).
    #[arg(long, help_heading = "Techniques")]
    reflect: bool,
}

/// `--technique`'s values: every technique, with what it does.
fn technique_names() -> clap::builder::PossibleValuesParser {
    let values = technique::ALL.iter().map(|t| {
        let about = t
            .about()
            .lines()
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(" ");
        clap::builder::PossibleValue::new(t.name()).help(about)
    });
    clap::builder::PossibleValuesParser::new(values)
}

impl TechniqueArgs {
    fn techniques(&self) -> anyhow::Result<Techniques> {
        let mut techniques = Techniques::default();
        techniques.samples = self.samples.map_or(0, usize::from);
        if self.reflect {
            techniques = techniques.with(&technique::Reflect);
        }
        for name in &self.technique {
            techniques = techniques.named(name)?;
        }
        Ok(techniques)
    }
}

impl ConstraintArgs {
    fn options(&self) -> anyhow::Result<lore::ConstraintOptions> {
        // A file that cannot be read is a usage error (exit code 2).
        let read = |path: &std::path::Path| {
            std::fs::read_to_string(path)
                .map_err(|e| Error::InvalidRequest(format!("cannot read {}: {e}", path.display())))
        };
        let schema = match self.schema.as_deref() {
            None => None,
            Some("cited") => Some(serde_json::Value::String("cited".into())),
            Some(path) => {
                let text = read(std::path::Path::new(path))?;
                Some(
                    serde_json::from_str(&text)
                        .map_err(|e| Error::InvalidRequest(format!("{path} is not JSON: {e}")))?,
                )
            }
        };
        Ok(lore::ConstraintOptions {
            schema,
            choices: self.choices.clone(),
            regex: self.regex.clone(),
            grammar: self.grammar.as_deref().map(read).transpose()?,
        })
    }
}

pub fn run(global: &Global, args: AskArgs) -> anyhow::Result<()> {
    let config = with_generator(global, args.generator.as_ref())?;
    let collections = config.collections();
    let backend = open_backend(config, true, CLI_ACTOR)?;
    // The same body a client sends a server: one place fills defaults.
    let constraint = args.constraint.options()?;
    let mut request = AskBody {
        question: args.question.clone(),
        k: Some(args.k),
        filter: Filter::parse(&args.filter)?,
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
        stream: false,
        schema: constraint.schema,
        choices: constraint.choices,
        regex: constraint.regex,
        grammar: constraint.grammar,
        techniques: args.techniques.techniques()?,
        history: Vec::new(),
        document: args.document.as_deref().map(document_name),
        summarize: false,
    }
    .into_request()?;
    request.collections = collections;
    respond(
        backend.as_ref(),
        &request,
        args.json,
        !args.json && !args.no_stream,
    )
}

/// `lore summarize`'s flags.
#[derive(Args)]
pub struct SummarizeArgs {
    /// The document: a path or a document id.
    document: String,
    /// `default`, `light`, `large`, `gemma`, or a GGUF path (env LORE_GENERATOR).
    #[arg(long)]
    generator: Option<String>,
    /// Longest summary (and longest answer of each part) in tokens.
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Print the summary, its citations and the parts' answers as JSON.
    #[arg(long)]
    json: bool,
}

pub fn summarize(global: &Global, args: SummarizeArgs) -> anyhow::Result<()> {
    let config = with_generator(global, args.generator.as_ref())?;
    let collections = config.collections();
    let backend = open_backend(config, true, CLI_ACTOR)?;
    let mut request = AskBody {
        document: Some(document_name(&args.document)),
        summarize: true,
        max_tokens: args.max_tokens,
        ..AskBody::default()
    }
    .into_request()?;
    request.collections = collections;
    respond(backend.as_ref(), &request, args.json, !args.json)
}

/// Asks `request`, streaming the answer when `stream`, then prints it (as
/// JSON when `json`) with its sources.
fn respond(
    backend: &dyn lore::Lore,
    request: &lore::AskRequest,
    json: bool,
    stream: bool,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    let mut on_text = |text: &str| {
        if stream {
            // A closed stdout (a pipe into `head`) stops generation.
            return out
                .write_all(text.as_bytes())
                .and_then(|_| out.flush())
                .is_ok();
        }
        true
    };
    if request.document.is_some() && !json {
        eprintln!("lore: reading the whole document…");
    }
    let response = backend.ask(request, &mut on_text)?;
    if json {
        return print_json(&response);
    }
    if !stream {
        print!("{}", response.answer);
    }
    println!();
    print_sources(&response);
    if let Some(unsourced) = &response.unsourced {
        if stream {
            // What was streamed is the withdrawn draft.
            println!("{}", response.answer);
        }
        println!(
            "(withdrawn: it named {}, which no source holds)",
            unsourced.names.join(", ")
        );
    }
    if response.abstained {
        println!("(not in the documents)");
    }
    if !response.parts.is_empty() {
        println!("\nRead in {} parts:", response.parts.len());
        for part in &response.parts {
            let [first, last] = part.passages;
            let said = if part.abstained {
                "(nothing on this)".to_string()
            } else {
                part.answer.replace('\n', " ")
            };
            println!("  [{first}]–[{last}] {said}");
        }
    }
    print_techniques(&response);
    if !response.invalid_citations.is_empty() {
        eprintln!(
            "lore: dropped citations to missing sources: {:?}",
            response.invalid_citations
        );
    }
    Ok(())
}

/// A document named on the command line: an existing relative path made
/// absolute (the index names files by absolute path), anything else (an
/// id) as given.
pub fn document_name(name: &str) -> String {
    std::path::Path::new(name)
        .canonicalize()
        .map_or_else(|_| name.to_string(), |p| p.display().to_string())
}

/// The configuration with `--generator`, when given, as the model.
pub fn with_generator(global: &Global, generator: Option<&String>) -> anyhow::Result<Config> {
    config(global, |c| {
        if let Some(model) = generator {
            c.generator.model = Some(model.clone());
        }
    })
}

/// The cited sources, after an answer.
pub fn print_sources(response: &lore::AskResponse) {
    if response.citations.is_empty() {
        return;
    }
    println!("\nSources:");
    for c in &response.citations {
        let heading = if c.heading.is_empty() {
            String::new()
        } else {
            format!(" › {}", c.heading.join(" › "))
        };
        println!(
            "  [{}] {}{heading} [{}..{}]",
            c.n, c.path, c.byte_range.start, c.byte_range.end
        );
    }
}

/// What the techniques report, after the answer: quotes, reasoning, the
/// vote, reflection's verdict.
pub fn print_techniques(response: &lore::AskResponse) {
    if !response.quotes.is_empty() {
        println!("\nQuotes:");
        for q in &response.quotes {
            println!(
                "  [{}] \"{}\" ({} bytes {}..{})",
                q.n, q.text, q.path, q.range.start, q.range.end
            );
        }
    }
    if let Some(reasoning) = &response.reasoning {
        println!("\nReasoning:\n  {}", reasoning.replace('\n', "\n  "));
    }
    if !response.votes.is_empty() {
        println!("\nVotes:");
        for vote in &response.votes {
            println!("  {}× {}", vote.count, vote.answer.replace('\n', " "));
        }
    }
    if let Some(reflection) = &response.reflection {
        let verdict = match reflection.verdict {
            lore::engine::Verdict::Keep => "kept the draft",
            lore::engine::Verdict::Revise => "revised the draft",
            lore::engine::Verdict::Abstain => "found no answer in the sources",
        };
        println!("\nReflection {verdict}.");
        if reflection.verdict != lore::engine::Verdict::Keep {
            println!("  Draft: {}", reflection.draft.replace('\n', " "));
        }
    }
}

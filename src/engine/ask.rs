//! [`Engine::ask`]: retrieve, decide whether the documents can answer at
//! all, build the prompt, generate through the answer's grammar (with the
//! talk's techniques when asked: the switches of [`super::technique`] and
//! self-consistency's vote), resolve citations.

use std::time::Instant;

use serde_json::Value;

use super::Engine;
use super::conversation::asked_words;
use super::request::{
    Abstention, AskRequest, AskResponse, AskTimings, Reflection, Techniques, Unsourced,
    VOTE_TEMPERATURE, Verdict, Vote,
};
use super::technique::{self, Parts, Technique};
use crate::answer::{
    Citation, Correction, Quote, canonical_choice, choice_spellings, cited_schema, is_abstention,
    json_citations, resolve, resolve_numbers, text_grammar, unsourced_names, verify, vote_key,
};
use crate::error::{Error, Result};
use crate::generate::{Constraint, Generated, Generator, Sampling, StopReason};
use crate::prompt::{self, NOT_IN_DOCUMENTS, Source, Style};
use crate::search::{Hit, Mode, SearchRequest};

/// What the answer must look like, for one prompt's sources.
pub(super) enum Shape {
    /// Text with `[n]` citations, through [`text_grammar`].
    Text,
    /// The built-in `{answer, citations}` JSON.
    CitedJson,
    /// The caller's constraint.
    Custom,
}

impl Shape {
    fn of(request: &AskRequest) -> Result<Shape> {
        if request.constraint.is_some() || request.cited_json {
            let text_only = request.techniques.switches().find_map(|t| t.text_only());
            if let Some(why) = text_only {
                return Err(Error::InvalidRequest(why.into()));
            }
        }
        match (&request.constraint, request.cited_json) {
            (Some(_), true) => Err(Error::InvalidRequest(
                "cited JSON and a constraint exclude each other".into(),
            )),
            (Some(_), false) => Ok(Shape::Custom),
            (None, true) => Ok(Shape::CitedJson),
            (None, false) => Ok(Shape::Text),
        }
    }

    /// The constraint of the answer itself.
    fn constraint(&self, request: &AskRequest, sources: &[Source]) -> Constraint {
        match (self, &request.constraint) {
            (Shape::Custom, Some(Constraint::Choices { choices })) => Constraint::Choices {
                choices: choice_spellings(choices),
            },
            (Shape::Custom, Some(custom)) => custom.clone(),
            (Shape::CitedJson, _) => cited_schema(sources.len()),
            _ => request
                .techniques
                .switches()
                .find_map(|t| t.text_constraint(sources))
                .unwrap_or_else(|| text_grammar(sources.len())),
        }
    }
}

/// One generated answer, read back.
pub(super) struct Draft {
    pub answer: String,
    /// Generation ended at the token limit, not at the answer's end.
    pub truncated: bool,
    pub reasoning: Option<String>,
    pub json: Option<Value>,
    pub citations: Vec<Citation>,
    pub invalid_citations: Vec<usize>,
    pub corrected_citations: Vec<Correction>,
    pub quotes: Vec<Quote>,
    key: String,
}

/// What an answer is built from: the (standalone) question, the sources
/// found for it and what finding them measured.
pub(super) struct Grounds {
    pub question: String,
    pub standalone_question: Option<String>,
    pub retrieved: Vec<Hit>,
    pub support: Option<f64>,
    pub timings: AskTimings,
}

impl Grounds {
    fn new(
        question: &str,
        rewrite: &Option<super::conversation::Rewrite>,
        retrieved: Vec<Hit>,
        support: Option<f64>,
        start: Instant,
    ) -> Grounds {
        Grounds {
            question: question.to_string(),
            standalone_question: rewrite.as_ref().map(|r| r.question.clone()),
            retrieved,
            support,
            timings: AskTimings {
                retrieve_ms: start.elapsed().as_secs_f64() * 1000.0,
                rewrite_ms: rewrite.as_ref().map_or(0.0, |r| r.ms),
                rewrite_prompt_tokens: rewrite.as_ref().map_or(0, |r| r.generated.prompt_tokens),
                ..AskTimings::default()
            },
        }
    }
}

impl Engine {
    /// Answers `request` from the documents, streaming the answer's text
    /// to `on_text` (return `false` to stop). With several samples or
    /// reflection, the final answer arrives in one piece at the end; while
    /// nothing can be shown, `on_text("")` asks whether to go on.
    pub fn ask(
        &self,
        request: &AskRequest,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<AskResponse> {
        let response = self.answer(request, on_text)?;
        // The question is the caller's and may be private: its outcome only.
        tracing::info!(
            target: "lore::ask",
            abstained = response.abstained,
            because = response.abstained_because.map(Abstention::name),
            support = response.support,
            citations = response.citations.len(),
            quotes = response.quotes.len(),
            "answer"
        );
        Ok(response)
    }

    fn answer(
        &self,
        request: &AskRequest,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<AskResponse> {
        request.validate(&self.config.generator)?;
        let shape = Shape::of(request)?;
        let rewrite =
            self.standalone_question(&request.question, &request.history, &mut || on_text(""))?;
        let question = rewrite
            .as_ref()
            .map_or(request.question.as_str(), |r| r.question.as_str());
        let start = Instant::now();
        if let Some(document) = &request.document {
            let (retrieved, support) = self.whole_document(request, document, question)?;
            let unanswerable = (!request.summary
                && support.unwrap_or(0.0) < self.config.generator.min_support)
                .then_some(Abstention::Unsupported);
            let grounds = Grounds::new(question, &rewrite, retrieved, support, start);
            return self.answer_document(request, &shape, grounds, unanswerable, on_text);
        }
        let search = SearchRequest {
            filter: request.filter.clone(),
            collections: request.collections.clone(),
            readers: request.readers.clone(),
            coverage: true,
            coverage_of: rewrite.as_ref().map(|r| {
                let shown = request.history.len().saturating_sub(r.turns_used);
                asked_words(&r.question, &request.question, &request.history[shown..])
            }),
            ..SearchRequest::new(question, request.k, Mode::Hybrid)
        };
        let found = self.search(&search)?;
        let support = found.coverage;
        let unanswerable = if found.hits.is_empty()
            || found.best_dense.unwrap_or(0.0) < self.config.generator.min_score
        {
            Some(Abstention::NoMatch)
        } else if support.unwrap_or(0.0) < self.config.generator.min_support {
            Some(Abstention::Unsupported)
        } else {
            None
        };
        let grounds = Grounds::new(question, &rewrite, found.hits, support, start);
        self.answer_from(request, &shape, grounds, unanswerable, on_text)
    }

    /// The sources the next prompt should start with: the last one's, with
    /// `generator.keep_source_order`.
    fn lead_sources(&self) -> Vec<prompt::SourceKey> {
        if !self.config.generator.keep_source_order {
            return Vec::new();
        }
        // A poisoned lock only loses the hint.
        self.last_sources
            .lock()
            .map(|last| last.clone())
            .unwrap_or_default()
    }

    fn remember_sources(&self, sources: Vec<prompt::SourceKey>) {
        if let Ok(mut last) = self.last_sources.lock() {
            *last = sources;
        }
    }

    /// A text answer that names commands, options or settings none of its
    /// sources holds (their text, path and headings), or figures neither
    /// they nor the question hold, with `generator.check_names`.
    fn unsourced(
        &self,
        shape: &Shape,
        answer: &str,
        sources: &[Source],
        question: &str,
    ) -> Option<Unsourced> {
        if !self.config.generator.check_names
            || !matches!(shape, Shape::Text)
            || is_abstention(answer)
        {
            return None;
        }
        let texts: Vec<String> = sources
            .iter()
            .map(|s| {
                format!(
                    "{}\n{}\n{}",
                    prompt::shown_path(&s.hit.path),
                    s.hit.heading.join("\n"),
                    s.hit.text
                )
            })
            .collect();
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let names = unsourced_names(answer, &texts, question);
        (!names.is_empty()).then(|| Unsourced {
            draft: answer.to_string(),
            names,
        })
    }

    /// The prompt's variants `techniques` ask for.
    pub(super) fn style(&self, techniques: &Techniques) -> Style<'_> {
        let mut style = Style::default();
        for t in techniques.switches() {
            t.prompt(&mut style, &self.config.generator);
        }
        style
    }

    /// The answer to `grounds.question` from `grounds.retrieved`, or the
    /// abstention `unanswerable` gives, in the answer's `shape`.
    pub(super) fn answer_from(
        &self,
        request: &AskRequest,
        shape: &Shape,
        grounds: Grounds,
        unanswerable: Option<Abstention>,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<AskResponse> {
        let Grounds {
            question,
            standalone_question,
            retrieved,
            support,
            mut timings,
        } = grounds;
        let question = question.as_str();
        // A caller's constraint must be matched, so only lore's own shapes
        // (text, cited JSON) abstain before the model is asked.
        if let Some(because) = unanswerable.filter(|_| !matches!(shape, Shape::Custom)) {
            let mut response = abstention(shape, retrieved, timings, because);
            response.support = support;
            response.standalone_question = standalone_question;
            on_text(&response.answer);
            return Ok(response);
        }
        let generator = self.generator()?;
        let context = self.context_tokens(generator.as_ref());
        let techniques = &request.techniques;
        let reserve = request.sampling.max_tokens * techniques.outputs_per_answer();
        let lead = self.lead_sources();
        let style = Style {
            lead: &lead,
            ..self.style(techniques)
        };
        let built = prompt::build(
            generator.as_ref(),
            question,
            &retrieved,
            context,
            reserve,
            style,
        )?;
        // `retrieved` numbered as the prompt gave them, so `[n]` is the
        // `n`th; the hits that did not fit follow.
        let given: Vec<prompt::SourceKey> = built
            .sources
            .iter()
            .map(|s| prompt::source_key(&s.hit))
            .collect();
        let retrieved = prompt::lead_first(retrieved, &given);
        self.remember_sources(given);
        let answer_constraint = shape.constraint(request, &built.sources);
        let rendered = generator.render(&built.messages);
        let switches: Vec<&dyn Technique> = techniques.switches().collect();
        let pass = Pass {
            generator: generator.as_ref(),
            shape,
            sources: &built.sources,
            sampling: &request.sampling,
            switches: &switches,
            choices: match &request.constraint {
                Some(Constraint::Choices { choices }) => Some(choices),
                _ => None,
            },
        };
        // Live only when one answer comes out of one pass, with at most
        // one technique's part to hold back before it.
        let holds: Vec<_> = switches.iter().filter_map(|t| t.hold()).collect();
        let streams =
            techniques.samples <= 1 && switches.iter().all(|t| t.passes() == 0) && holds.len() <= 1;
        let (mut draft, votes) = if techniques.samples <= 1 {
            let mut stream = Stream::new(holds.first().copied(), streams, on_text);
            let generated = pass.generate(&rendered, &answer_constraint, &mut stream)?;
            timings.add(&generated);
            (pass.read(&generated), Vec::new())
        } else {
            let generated = pass.generate_votes(
                &rendered,
                &answer_constraint,
                techniques.samples,
                &mut || on_text(""),
            )?;
            generated.iter().for_each(|g| timings.add(g));
            let drafts: Vec<Draft> = generated.iter().map(|g| pass.read(g)).collect();
            vote(drafts)
        };
        let mut reflection = None;
        for t in &switches {
            let checked = technique::Draft {
                generator: generator.as_ref(),
                question,
                sources: &built.sources,
                sampling: &request.sampling,
                constraint: &answer_constraint,
                text: matches!(shape, Shape::Text),
                answer: &draft.answer,
            };
            let Some(reviewed) = t.review(&checked, &mut || on_text(""))? else {
                continue;
            };
            timings.add(&reviewed.generated);
            let before = draft.answer.clone();
            if let Some(revision) = &reviewed.revision {
                draft = Draft {
                    reasoning: draft.reasoning.take(),
                    truncated: reviewed.generated.stop == StopReason::MaxTokens,
                    ..pass.read_answer(revision, Parts::default())
                };
            }
            reflection = Some(Reflection {
                verdict: reviewed.verdict,
                draft: before,
            });
        }
        timings.prompt_tokens = generator.count_tokens(&rendered)?;
        if reflection
            .as_ref()
            .is_some_and(|r| r.verdict == Verdict::Abstain)
        {
            let mut response = abstention(shape, retrieved, timings, Abstention::Reflection);
            response.reflection = reflection;
            response.support = support;
            on_text(&response.answer);
            response.standalone_question = standalone_question;
            response.reasoning = draft.reasoning;
            response.votes = votes;
            return Ok(response);
        }
        if let Some(unsourced) = self.unsourced(shape, &draft.answer, &built.sources, question) {
            let mut response = abstention(shape, retrieved, timings, Abstention::Unsourced);
            response.unsourced = Some(unsourced);
            response.support = support;
            response.standalone_question = standalone_question;
            response.reasoning = draft.reasoning;
            response.votes = votes;
            // Streamed already: the final answer replaces it.
            if !streams {
                on_text(&response.answer);
            }
            return Ok(response);
        }
        if !streams {
            on_text(&draft.answer);
        }
        let abstained = match shape {
            Shape::Text => is_abstention(&draft.answer),
            Shape::CitedJson => draft.json.as_ref().is_some_and(|v| {
                v["answer"].as_str().is_some_and(is_abstention)
                    && v["citations"].as_array().is_some_and(Vec::is_empty)
            }),
            Shape::Custom => false,
        };
        Ok(AskResponse {
            abstained,
            abstained_because: abstained.then_some(Abstention::Model),
            support,
            answer: draft.answer,
            citations: draft.citations,
            invalid_citations: draft.invalid_citations,
            corrected_citations: draft.corrected_citations,
            quotes: draft.quotes,
            json: draft.json,
            truncated: draft.truncated,
            reasoning: draft.reasoning,
            votes,
            reflection,
            unsourced: None,
            standalone_question,
            parts: Vec::new(),
            retrieved,
            timings,
        })
    }
}

/// The answer "not in the documents", in the answer's shape (cited JSON:
/// that sentence with no citations).
pub(super) fn abstention(
    shape: &Shape,
    retrieved: Vec<Hit>,
    timings: AskTimings,
    because: Abstention,
) -> AskResponse {
    let json = matches!(shape, Shape::CitedJson)
        .then(|| serde_json::json!({ "answer": NOT_IN_DOCUMENTS, "citations": [] }));
    AskResponse {
        answer: json
            .as_ref()
            .map_or_else(|| NOT_IN_DOCUMENTS.to_string(), Value::to_string),
        abstained: true,
        abstained_because: Some(because),
        support: None,
        citations: Vec::new(),
        invalid_citations: Vec::new(),
        corrected_citations: Vec::new(),
        quotes: Vec::new(),
        json,
        truncated: false,
        reasoning: None,
        votes: Vec::new(),
        reflection: None,
        unsourced: None,
        standalone_question: None,
        parts: Vec::new(),
        retrieved,
        timings,
    }
}

impl AskTimings {
    pub(super) fn add(&mut self, generated: &Generated) {
        self.prompt_ms += generated.prompt_ms;
        self.reused_tokens += generated.reused_tokens;
        self.gen_tokens += generated.gen_tokens;
        self.gen_ms += generated.gen_ms;
    }
}

/// Passes answer text on to the caller: with chain of thought only what
/// follows the answer marker (the reasoning is not the answer), with
/// quotes only what follows them; nothing at all when the final answer
/// comes later in one piece.
pub(super) struct Stream<'a> {
    /// Text held back until this marker, and how many of its bytes are
    /// not part of the answer.
    hold: Option<(&'static str, usize)>,
    live: bool,
    seen: String,
    on_text: &'a mut dyn FnMut(&str) -> bool,
}

impl<'a> Stream<'a> {
    pub(super) fn new(
        hold: Option<(&'static str, usize)>,
        live: bool,
        on_text: &'a mut dyn FnMut(&str) -> bool,
    ) -> Self {
        Stream {
            hold,
            live,
            seen: String::new(),
            on_text,
        }
    }

    fn push(&mut self, text: &str) -> bool {
        if !self.live {
            return (self.on_text)("");
        }
        let Some((marker, skip)) = self.hold else {
            return (self.on_text)(text);
        };
        self.seen.push_str(text);
        match self.seen.find(marker) {
            Some(at) => {
                self.hold = None;
                let after = self.seen[at + skip..].to_string();
                (self.on_text)(&after)
            }
            None => (self.on_text)(""),
        }
    }
}

/// One prompt's generation settings, shared by its samples and checks.
pub(super) struct Pass<'a> {
    pub generator: &'a dyn Generator,
    pub shape: &'a Shape,
    pub sources: &'a [Source],
    pub sampling: &'a Sampling,
    /// The techniques that are on.
    pub switches: &'a [&'a dyn Technique],
    /// The caller's choices, which answers are read back as.
    pub choices: Option<&'a [String]>,
}

impl Pass<'_> {
    /// The whole output's constraint: the answer's, inside what the
    /// techniques put around it (reasoning before it).
    fn constraint(&self, answer: &Constraint) -> Constraint {
        let max_tokens = self.sampling.max_tokens;
        self.switches
            .iter()
            .fold(answer.clone(), |c, t| t.around(c, max_tokens))
    }

    /// Room for the techniques' parts and the answer.
    fn sampling(&self) -> Sampling {
        let mut sampling = self.sampling.clone();
        sampling.max_tokens *= 1 + self.switches.iter().map(|t| t.outputs()).sum::<usize>();
        sampling
    }

    pub(super) fn generate(
        &self,
        rendered: &str,
        answer: &Constraint,
        stream: &mut Stream<'_>,
    ) -> Result<Generated> {
        self.generator.generate(
            rendered,
            &self.sampling(),
            Some(&self.constraint(answer)),
            &mut |text| stream.push(text),
        )
    }

    /// `n` samples of the same prompt, seeds `seed..seed + n`, at the
    /// request's temperature. A greedy request's first sample stays greedy
    /// and the others take [`VOTE_TEMPERATURE`], so a vote with no majority
    /// (free text, where samples rarely agree word for word) keeps the
    /// answer the request would have had without samples.
    fn generate_votes(
        &self,
        rendered: &str,
        answer: &Constraint,
        n: usize,
        go_on: &mut dyn FnMut() -> bool,
    ) -> Result<Vec<Generated>> {
        let base = self.sampling();
        let samplings: Vec<Sampling> = (0..n as u64)
            .map(|i| Sampling {
                seed: base.seed.wrapping_add(i),
                temperature: if base.temperature > 0.0 {
                    base.temperature
                } else if i == 0 {
                    0.0
                } else {
                    VOTE_TEMPERATURE
                },
                ..base.clone()
            })
            .collect();
        self.generator
            .generate_each(rendered, &samplings, Some(&self.constraint(answer)), go_on)
    }

    /// Reads a generated output: reasoning apart, citations resolved and
    /// checked, JSON parsed.
    pub(super) fn read(&self, generated: &Generated) -> Draft {
        let truncated = matches!(
            generated.stop,
            StopReason::MaxTokens | StopReason::ContextFull
        );
        Draft {
            truncated,
            ..self.read_text(&generated.text)
        }
    }

    /// Reads a whole output: each technique takes its part off the front
    /// (reasoning), then the answer is read.
    fn read_text(&self, text: &str) -> Draft {
        let mut parts = Parts::default();
        let rest = self.switches.iter().fold(text.trim(), |rest, t| {
            t.read_output(rest, &mut parts).trim()
        });
        self.read_answer(rest, parts)
    }

    /// Reads an answer: in text, each technique's part off the front
    /// (quotes), then citations resolved and checked; JSON parsed.
    fn read_answer(&self, answer: &str, mut parts: Parts) -> Draft {
        let answer = answer.trim();
        match self.shape {
            Shape::Text => {
                let answer = self.switches.iter().fold(answer, |rest, t| {
                    t.read_answer(rest, self.sources, &mut parts)
                });
                let (answer, corrected_citations) = verify(answer, self.sources);
                let (citations, invalid_citations) = resolve(&answer, self.sources);
                Draft {
                    truncated: false,
                    key: vote_key(&answer),
                    answer: answer.trim().to_string(),
                    reasoning: parts.reasoning,
                    json: None,
                    citations,
                    invalid_citations,
                    corrected_citations,
                    quotes: parts.quotes,
                }
            }
            Shape::CitedJson | Shape::Custom => {
                let answer = match self.choices {
                    Some(choices) => {
                        canonical_choice(answer, choices).map_or(answer, String::as_str)
                    }
                    None => answer,
                };
                let json: Option<Value> = serde_json::from_str(answer).ok();
                let numbers = match (&json, self.shape) {
                    (Some(value), Shape::CitedJson) => json_citations(value),
                    _ => Vec::new(),
                };
                let (citations, invalid_citations) = resolve_numbers(&numbers, self.sources);
                let key = match (&json, self.shape) {
                    (Some(value), Shape::CitedJson) => {
                        vote_key(value["answer"].as_str().unwrap_or_default())
                    }
                    _ => answer.to_string(),
                };
                Draft {
                    truncated: false,
                    key,
                    answer: answer.to_string(),
                    reasoning: parts.reasoning,
                    json,
                    citations,
                    invalid_citations,
                    corrected_citations: Vec::new(),
                    quotes: Vec::new(),
                }
            }
        }
    }
}

/// The majority answer of `drafts` (ties: the earlier sample) and the
/// tally, most votes first.
fn vote(drafts: Vec<Draft>) -> (Draft, Vec<Vote>) {
    let mut tally: Vec<(usize, usize)> = Vec::new(); // (first draft, count)
    for (i, draft) in drafts.iter().enumerate() {
        match tally
            .iter_mut()
            .find(|(first, _)| drafts[*first].key == draft.key)
        {
            Some((_, count)) => *count += 1,
            None => tally.push((i, 1)),
        }
    }
    tally.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let votes = tally
        .iter()
        .map(|&(first, count)| Vote {
            answer: drafts[first].answer.clone(),
            count,
        })
        .collect();
    let winner = tally[0].0;
    let draft = drafts.into_iter().nth(winner).expect("a vote has drafts");
    (draft, votes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompt::ANSWER_MARKER;

    fn draft(answer: &str) -> Draft {
        Draft {
            answer: answer.into(),
            reasoning: None,
            json: None,
            truncated: false,
            citations: Vec::new(),
            invalid_citations: Vec::new(),
            corrected_citations: Vec::new(),
            quotes: Vec::new(),
            key: vote_key(answer),
        }
    }

    #[test]
    fn the_majority_wins_and_ties_go_to_the_earlier_sample() {
        let (winner, votes) = vote(vec![
            draft("No [1]."),
            draft("Yes [2]."),
            draft("yes [1]"),
            draft("Maybe."),
        ]);
        assert_eq!(winner.answer, "Yes [2].");
        assert_eq!(
            votes.iter().map(|v| v.count).collect::<Vec<_>>(),
            vec![2, 1, 1]
        );
        assert_eq!(votes[1].answer, "No [1].");
        let (winner, _) = vote(vec![draft("a"), draft("b")]);
        assert_eq!(winner.answer, "a");
    }

    #[test]
    fn streaming_with_reasoning_passes_on_only_the_answer() {
        let mut out = String::new();
        let mut on_text = |t: &str| {
            out.push_str(t);
            true
        };
        let mut stream = Stream::new(
            Some((ANSWER_MARKER, ANSWER_MARKER.len())),
            true,
            &mut on_text,
        );
        for piece in [
            "Source 1 says",
            " five.\nAns",
            "wer: According",
            " to [1], five.",
        ] {
            assert!(stream.push(piece));
        }
        assert_eq!(out, "According to [1], five.");
    }
}

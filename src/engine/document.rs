//! Questions about one whole document ([`AskRequest::document`]): its
//! chunks, in order and numbered as the citations number them, are the
//! sources. When they fit one prompt, the answer is the usual one over all
//! of them. When they do not, map-reduce: the question is put to each part
//! that fits (each part's answer cites the document's own passage
//! numbers), then the parts' answers are combined into one answer that
//! keeps those citations (in rounds, when even the answers do not fit).
//! Every citation is still checked against the passages it names.

use std::path::Path;

use super::Engine;
use super::ask::{Draft, Grounds, Pass, Shape, Stream, abstention};
use super::request::{Abstention, AskRequest, AskResponse, AskTimings, PartAnswer, Techniques};
use crate::access::Readers;
use crate::answer::{is_abstention, renumber_citations, text_grammar};
use crate::error::{Error, Result};
use crate::generate::Generator;
use crate::prompt::{self, Note, Source};
use crate::search::{Filter, Hit, Mode, SearchRequest};
use crate::types::{DEFAULT_COLLECTION, DocId, DocRecord, normalize, path_key};

/// Most passages a whole-document question reads (about 2 MB of text):
/// beyond that, a question is better put to search.
pub const MAX_PASSAGES: usize = 4096;
/// The tracing target of a long document's progress (one event per part
/// read, `part` of `parts`, then one as the answers are combined): the CLI
/// shows them as progress lines.
pub const PROGRESS_TARGET: &str = "lore::progress";
/// Passages offered to one prompt at a time while fitting a part (a part
/// holds far fewer; this bounds the token counting).
const WINDOW: usize = 24;

impl Engine {
    /// The chunks of `document` in the request's collection, in order, and
    /// the support of `question` in it (its best passage's coverage).
    pub(super) fn whole_document(
        &self,
        request: &AskRequest,
        document: &str,
        question: &str,
    ) -> Result<(Vec<Hit>, Option<f64>)> {
        let collection = request
            .collections
            .first()
            .map_or(DEFAULT_COLLECTION, String::as_str);
        let doc = self.find_document(collection, &request.readers, document)?;
        if doc.chunks.len() > MAX_PASSAGES {
            return Err(Error::InvalidRequest(format!(
                "{} has {} passages; a whole-document question reads at most {MAX_PASSAGES} \
                 (ask without --document to search it)",
                doc.path,
                doc.chunks.len()
            )));
        }
        let docs = self.collection(collection)?;
        let docs = docs.index().docs();
        let mut hits = Vec::with_capacity(doc.chunks.len());
        for (i, id) in doc.chunks.iter().enumerate() {
            let chunk = docs.chunk(id)?.ok_or_else(|| {
                Error::store(
                    "docs",
                    format!("document {} names a missing chunk", doc.id.0),
                )
            })?;
            hits.push(Hit {
                rank: i + 1,
                collection: collection.to_string(),
                score: 1.0,
                doc_id: doc.id.clone(),
                path: doc.path.clone(),
                chunk_id: chunk.id,
                byte_range: chunk.byte_range,
                heading: chunk.heading,
                text: chunk.text,
                found_by: Vec::new(),
            });
        }
        let search = SearchRequest {
            filter: Filter {
                path: Some(doc.path.clone()),
                ..Filter::default()
            },
            collections: vec![collection.to_string()],
            readers: request.readers.clone(),
            coverage: true,
            ..SearchRequest::new(question, 1, Mode::Hybrid)
        };
        Ok((hits, self.search(&search)?.coverage))
    }

    /// The document `name` names in `collection`: a document id, else the
    /// path of the file it came from (relative to the working directory),
    /// if `readers` may read it; a file of several documents must be named
    /// by id.
    fn find_document(&self, collection: &str, readers: &Readers, name: &str) -> Result<DocRecord> {
        if let Ok(doc) = self.document(collection, readers, name) {
            return Ok(doc);
        }
        let path = Path::new(name);
        let path = path.canonicalize().unwrap_or_else(|_| {
            normalize(&std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()))
        });
        let missing = || Error::NotFound(format!("document {name}"));
        let docs = self.collection(collection)?;
        let docs = docs.index().docs();
        let file = docs.file(&path_key(&path))?.ok_or_else(missing)?;
        let readable: Vec<DocRecord> = file
            .docs
            .iter()
            .map(|id: &DocId| docs.doc(id))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .filter(|d| readers.may_read(d))
            .collect();
        match readable.len() {
            0 => Err(missing()),
            1 => Ok(readable.into_iter().next().expect("one document")),
            n => Err(Error::InvalidRequest(format!(
                "{name} holds {n} documents; name one by id ({}, …)",
                readable
                    .iter()
                    .take(3)
                    .map(|d| d.id.0.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Answers from a whole document: in one prompt when it fits, else
    /// part by part and combined.
    pub(super) fn answer_document(
        &self,
        request: &AskRequest,
        shape: &Shape,
        grounds: Grounds,
        unanswerable: Option<Abstention>,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<AskResponse> {
        let unanswerable = if grounds.retrieved.is_empty() {
            Some(Abstention::NoMatch)
        } else {
            unanswerable
        };
        let generator = self.generator()?;
        let parts = match unanswerable {
            Some(Abstention::NoMatch) => Vec::new(),
            _ => self.parts(generator.as_ref(), request, &grounds)?,
        };
        // lore's own shapes abstain before the model is asked; a caller's
        // constraint is answered (see `answer_from`), but never from a
        // silently shortened document.
        let abstains = unanswerable.is_some() && !matches!(shape, Shape::Custom);
        if parts.len() <= 1 || abstains {
            return self.answer_from(request, shape, grounds, unanswerable, on_text);
        }
        if !matches!(shape, Shape::Text) || request.techniques != Techniques::default() {
            return Err(Error::InvalidRequest(format!(
                "{} is too long for one prompt ({} passages in {} parts), so it is answered part \
                 by part, as plain text: ask without a constraint or techniques",
                grounds.retrieved[0].path,
                grounds.retrieved.len(),
                parts.len()
            )));
        }
        self.map_reduce(generator.as_ref(), request, grounds, &parts, on_text)
    }

    /// The parts of `grounds.retrieved` that each fit one prompt, as
    /// ranges of consecutive passages.
    fn parts(
        &self,
        generator: &dyn Generator,
        request: &AskRequest,
        grounds: &Grounds,
    ) -> Result<Vec<std::ops::Range<usize>>> {
        let context = self.context_tokens(generator);
        let reserve = request.sampling.max_tokens * request.techniques.outputs_per_answer();
        let all = &grounds.retrieved;
        let mut parts = Vec::new();
        let mut start = 0;
        while start < all.len() {
            let window = &all[start..all.len().min(start + WINDOW)];
            let built = prompt::build(
                generator,
                &grounds.question,
                window,
                context,
                reserve,
                self.style(&request.techniques),
            )?;
            // The longest run from `start` that fit.
            let fit = window
                .iter()
                .zip(&built.sources)
                .take_while(|(hit, source)| hit.chunk_id == source.hit.chunk_id)
                .count();
            if fit == 0 {
                return Err(Error::InvalidRequest(format!(
                    "passage {} of {} does not fit the context with the answer's {} tokens",
                    start + 1,
                    all[start].path,
                    request.sampling.max_tokens
                )));
            }
            parts.push(start..start + fit);
            start += fit;
        }
        Ok(parts)
    }

    /// Puts the question to each part, then combines the parts' answers.
    fn map_reduce(
        &self,
        generator: &dyn Generator,
        request: &AskRequest,
        grounds: Grounds,
        parts: &[std::ops::Range<usize>],
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<AskResponse> {
        let plain = AskRequest {
            history: Vec::new(),
            document: None,
            ..request.clone()
        };
        let mut timings = grounds.timings.clone();
        let mut answers = Vec::with_capacity(parts.len());
        tracing::info!(target: PROGRESS_TARGET, parts = parts.len(), "reading");
        for (i, part) in parts.iter().enumerate() {
            let part_grounds = Grounds {
                question: grounds.question.clone(),
                standalone_question: None,
                retrieved: grounds.retrieved[part.clone()].to_vec(),
                support: None,
                timings: Default::default(),
            };
            let partial =
                self.answer_from(&plain, &Shape::Text, part_grounds, None, &mut |_| {
                    on_text("")
                })?;
            if !on_text("") {
                return Err(Error::unavailable("the answer was stopped"));
            }
            timings.merge(&partial.timings);
            tracing::info!(
                target: PROGRESS_TARGET,
                part = i + 1,
                parts = parts.len(),
                passages = part.len(),
                "part read"
            );
            // The part's [n] are its own sources; the document's are offset.
            let offset = part.start;
            answers.push(PartAnswer {
                passages: [part.start + 1, part.end],
                answer: renumber_citations(&partial.answer, |n| n + offset),
                abstained: partial.abstained,
            });
        }
        let sources: Vec<Source> = grounds
            .retrieved
            .iter()
            .enumerate()
            .map(|(i, hit)| Source {
                n: i + 1,
                hit: hit.clone(),
            })
            .collect();
        let notes: Vec<Note<'_>> = answers
            .iter()
            .filter(|a| !a.abstained)
            .map(|a| Note {
                passages: a.passages,
                text: &a.answer,
            })
            .collect();
        tracing::info!(target: PROGRESS_TARGET, parts = notes.len(), "combining");
        let mut response = if notes.is_empty() {
            on_text(prompt::NOT_IN_DOCUMENTS);
            abstention(
                &Shape::Text,
                Vec::new(),
                Default::default(),
                Abstention::Model,
            )
        } else {
            let path = grounds.retrieved[0].path.clone();
            let draft = self.combine(
                generator,
                request,
                &path,
                &grounds.question,
                notes,
                &sources,
                &mut timings,
                on_text,
            )?;
            let abstained = is_abstention(&draft.answer);
            AskResponse {
                abstained,
                abstained_because: abstained.then_some(Abstention::Model),
                answer: draft.answer,
                citations: draft.citations,
                invalid_citations: draft.invalid_citations,
                corrected_citations: draft.corrected_citations,
                truncated: draft.truncated,
                ..abstention(
                    &Shape::Text,
                    Vec::new(),
                    Default::default(),
                    Abstention::Model,
                )
            }
        };
        response.support = grounds.support;
        response.standalone_question = grounds.standalone_question;
        response.parts = answers;
        response.retrieved = grounds.retrieved;
        response.timings = timings;
        Ok(response)
    }

    /// Combines `notes` into one answer, streamed to `on_text`: in one
    /// prompt when they fit, else in rounds of those that fit together.
    #[allow(clippy::too_many_arguments)]
    fn combine(
        &self,
        generator: &dyn Generator,
        request: &AskRequest,
        path: &str,
        question: &str,
        notes: Vec<Note<'_>>,
        sources: &[Source],
        timings: &mut AskTimings,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Draft> {
        let context = self.context_tokens(generator);
        let room = context.saturating_sub(request.sampling.max_tokens);
        let fits = |notes: &[Note<'_>]| -> Result<bool> {
            let rendered = generator.render(&prompt::combine(question, path, notes));
            Ok(generator.count_tokens(&rendered)? <= room)
        };
        let pass = Pass {
            generator,
            shape: &Shape::Text,
            sources,
            sampling: &request.sampling,
            switches: &[],
            choices: None,
        };
        let constraint = text_grammar(sources.len());
        let mut notes: Vec<(Note<'_>, Option<String>)> =
            notes.into_iter().map(|n| (n, None)).collect();
        loop {
            let current: Vec<Note<'_>> = notes
                .iter()
                .map(|(n, text)| Note {
                    passages: n.passages,
                    text: text.as_deref().unwrap_or(n.text),
                })
                .collect();
            if fits(&current)? {
                let rendered = generator.render(&prompt::combine(question, path, &current));
                let mut stream = Stream::new(None, true, on_text);
                let generated = pass.generate(&rendered, &constraint, &mut stream)?;
                timings.add(&generated);
                return Ok(pass.read(&generated));
            }
            // Combine runs of notes that fit into one note each, then again.
            let mut next = Vec::new();
            let mut start = 0;
            while start < current.len() {
                let mut end = start + 1;
                while end < current.len() && fits(&current[start..=end])? {
                    end += 1;
                }
                if !fits(&current[start..start + 1])? {
                    return Err(Error::InvalidRequest(format!(
                        "the answers of the parts of {path} are too long to combine: \
                         ask for a shorter answer (max_tokens)"
                    )));
                }
                let rendered =
                    generator.render(&prompt::combine(question, path, &current[start..end]));
                let generated = pass.generate(
                    &rendered,
                    &constraint,
                    &mut Stream::new(None, false, &mut |_| on_text("")),
                )?;
                timings.add(&generated);
                let passages = [current[start].passages[0], current[end - 1].passages[1]];
                next.push((passages, pass.read(&generated).answer));
                start = end;
            }
            if next.len() >= current.len() {
                return Err(Error::InvalidRequest(format!(
                    "the answers of the parts of {path} cannot be combined in the context"
                )));
            }
            notes = next
                .into_iter()
                .map(|(passages, text)| (Note { passages, text: "" }, Some(text)))
                .collect();
        }
    }
}

impl AskTimings {
    /// Adds the generation counts of `other` (a part's answer).
    fn merge(&mut self, other: &AskTimings) {
        self.prompt_tokens += other.prompt_tokens;
        self.reused_tokens += other.reused_tokens;
        self.prompt_ms += other.prompt_ms;
        self.gen_tokens += other.gen_tokens;
        self.gen_ms += other.gen_ms;
    }
}

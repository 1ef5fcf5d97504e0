//! The tantivy-backed [`KeywordIndex`]: BM25 over one text field holding the
//! document title, the heading path and the chunk text (Anserini's
//! title-plus-text layout). Title and headings are thereby weighted up: they
//! are repeated in every chunk of their section. Measured on SciFact dev
//! (nDCG@10): separate title/heading fields boosted 1.5 gave 0.569, the
//! chunk text alone 0.651, one merged field 0.680.
//!
//! Each entry is keyed by its slot (an indexed fast field), so upserts are
//! delete-then-add and replaying a pending entry twice is harmless.

use std::path::Path;
use std::sync::Mutex;

use tantivy::collector::{FilterCollector, TopDocs};
use tantivy::directory::Directory;
use tantivy::query::{Bm25StatisticsProvider, BooleanQuery, Occur, PhraseQuery, Query, TermQuery};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
    TokenStream,
};
use tantivy::{
    DocSet, Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TERMINATED, Term, doc,
};

use super::{KeywordDoc, KeywordIndex, Owner, SlotSet};
use crate::error::{Error, Result};
use crate::types::Slot;

/// Memory for tantivy's indexing buffer.
const WRITER_MEMORY_BYTES: usize = 64 * 1024 * 1024;
/// Bytes of tantivy's per-file footer trailer (length and magic number).
const FOOTER_BYTES: u64 = 8;
/// Lower-cased, English stop words removed, Snowball-stemmed.
const TOKENIZER: &str = "lore_en";

/// Words that frame a question or a request rather than name its subject,
/// light verbs ("go", "use", "take") and words for the documents
/// themselves: left out of
/// [`KeywordIndex::coverage`]. Rare in documents, they would otherwise
/// weigh as much as the subject ("How *often* are keys rotated?", "*Tell*
/// me *everything* the *handbook* says about on-call").
#[rustfmt::skip]
const FRAME_WORDS: &[&str] = &[
    "how", "what", "which", "who", "whom", "whose", "when", "where", "why", "do", "does",
    "did", "can", "could", "should", "would", "may", "might", "must", "many", "much", "long",
    "often", "big", "large", "fast", "quickly", "soon", "far", "old", "kind", "type", "i",
    "me", "my", "we", "our", "you", "your", "please", "tell", "explain", "describe", "write",
    "summarize", "summarise", "list", "give", "show", "say", "says", "said", "mean", "means",
    "everything", "anything", "something", "detail", "details", "detailed", "documents",
    "document", "docs", "documentation", "manual", "handbook", "guide", "go", "goes", "get",
    "gets", "got", "use", "uses", "used", "using", "make", "makes", "made", "take", "takes",
    "took", "need", "needs", "needed", "happen", "happens", "put", "puts", "come", "comes",
    "keep", "keeps", "kept", "have", "has", "had", "done", "doing", "about", "from", "after",
    "before", "than", "all", "any", "each", "every", "some", "also", "here",
];

/// The analyzed terms of `text`, without repeats: lower case, stemmed,
/// stop words out (what the index and [`KeywordIndex::coverage`] see).
pub(crate) fn terms(text: &str) -> std::collections::BTreeSet<String> {
    let mut analyzer = analyzer();
    let mut stream = analyzer.token_stream(text);
    let mut out = std::collections::BTreeSet::new();
    while stream.advance() {
        out.insert(stream.token().text.clone());
    }
    out
}

/// Whether `word` (any case) frames a question rather than names its
/// subject (one of the [`FRAME_WORDS`]).
fn is_frame_word(word: &str) -> bool {
    FRAME_WORDS.contains(&word.to_lowercase().as_str())
}

/// Whether `word` names a question's subject: neither a frame word nor a
/// stop word.
pub(crate) fn is_subject_word(word: &str) -> bool {
    !word.is_empty() && !is_frame_word(word) && !terms(word).is_empty()
}

/// The terms a question asks about: its words but the [`FRAME_WORDS`].
pub(crate) fn asked_terms(question: &str) -> std::collections::BTreeSet<String> {
    let subject: Vec<&str> = question
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && !is_frame_word(w))
        .collect();
    terms(&subject.join(" "))
}

/// The BM25 query for a question, read as words and never as query
/// syntax: each whitespace-separated word is one term, or a phrase when the
/// analyzer cuts it in several (`gc.auto`, `max_connections`), and every
/// word may match. Through tantivy's query parser, `git gc --auto` excluded
/// every chunk holding "auto" (a leading `-` is its "must not"), and `+`,
/// `AND`, `field:` or a quote changed what a question meant.
fn words_query(field: Field, question: &str) -> BooleanQuery {
    let mut analyzer = analyzer();
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    for word in question.split_whitespace() {
        let mut stream = analyzer.token_stream(word);
        let mut tokens = Vec::new();
        while stream.advance() {
            let token = stream.token();
            tokens.push((token.position, Term::from_field_text(field, &token.text)));
        }
        let query: Box<dyn Query> = match tokens.len() {
            0 => continue,
            1 => Box::new(TermQuery::new(
                tokens.remove(0).1,
                IndexRecordOption::WithFreqs,
            )),
            _ => Box::new(PhraseQuery::new_with_offset(tokens)),
        };
        clauses.push((Occur::Should, query));
    }
    BooleanQuery::new(clauses)
}

/// BM25's inverse document frequency.
fn idf(docs: u64, with_term: u64) -> f64 {
    let (n, d) = (docs as f64, with_term.min(docs) as f64);
    (1.0 + (n - d + 0.5) / (d + 0.5)).ln()
}

/// tantivy-backed keyword index.
pub struct TantivyKeywordIndex {
    writer: Mutex<IndexWriter>,
    reader: IndexReader,
    fields: Fields,
    /// Instance id of the doc store, recorded with every commit.
    owner: String,
}

#[derive(Clone, Copy)]
struct Fields {
    slot: Field,
    text: Field,
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let text_options = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TOKENIZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let slot = builder.add_u64_field("slot", INDEXED | FAST | STORED);
    let text = builder.add_text_field("text", text_options);
    (builder.build(), Fields { slot, text })
}

/// Title, heading path (unless it only repeats the title) and text.
fn indexed_text(d: &KeywordDoc) -> String {
    let heading = if d.heading == d.title {
        ""
    } else {
        d.heading.as_str()
    };
    format!("{}\n{heading}\n{}", d.title, d.text)
}

fn analyzer() -> TextAnalyzer {
    let builder = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser);
    match StopWordFilter::new(Language::English) {
        Some(stop) => builder
            .filter(stop)
            .filter(Stemmer::new(Language::English))
            .build(),
        None => builder.filter(Stemmer::new(Language::English)).build(),
    }
}

impl TantivyKeywordIndex {
    /// Opens (or creates) the index in `dir` for the doc store `owner`.
    /// The index is derived, so anything wrong with it — another schema,
    /// another owner, a damaged file (tantivy's checksums) — starts it
    /// afresh, and `Index::open` refills it from the doc store.
    pub fn open(dir: &Path, owner: &Owner) -> Result<Self> {
        let (index, reader, fields) = match open_checked(dir, owner) {
            Ok(opened) => opened,
            Err(why) => {
                tracing::warn!(reason = %why, "keyword index unusable; rebuilding it from the doc store");
                std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
                open_checked(dir, owner).map_err(|why| Error::store("keywords", why))?
            }
        };
        let writer = index
            .writer_with_num_threads(1, WRITER_MEMORY_BYTES)
            .map_err(|e| match e {
                tantivy::TantivyError::LockFailure(..) => Error::IndexLocked {
                    index: dir.parent().unwrap_or(dir).to_path_buf(),
                },
                other => Error::from(other),
            })?;
        // A writer killed mid-commit leaves files no commit names (a
        // `.del` of the next opstamp): the next commit would collide with
        // them, so they go before anything is written.
        writer.garbage_collect_files().wait()?;
        Ok(TantivyKeywordIndex {
            writer: Mutex::new(writer),
            reader,
            fields,
            owner: owner.id.clone(),
        })
    }

    fn writer(&self) -> Result<std::sync::MutexGuard<'_, IndexWriter>> {
        self.writer
            .lock()
            .map_err(|_| Error::store("keywords", "writer lock poisoned"))
    }
}

/// Opens or creates the index in `dir`, with its reader; says why when it
/// cannot be used.
fn open_checked(
    dir: &Path,
    owner: &Owner,
) -> std::result::Result<(Index, IndexReader, Fields), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let (schema, fields) = schema();
    let directory = tantivy::directory::MmapDirectory::open(dir).map_err(|e| e.to_string())?;
    let index = Index::open_or_create(directory, schema).map_err(|e| e.to_string())?;
    let metas = index.load_metas().map_err(|e| e.to_string())?;
    if !metas.segments.is_empty() && !owner.accepts(metas.payload.as_deref()) {
        return Err("it was built for another doc store".into());
    }
    // Every file of every live segment that exists must match its checksum
    // (`Index::validate_checksum` skips files missing from `.managed.json`).
    // tantivy's footer check panics on a file of 4 to 7 bytes (it checks
    // for 4 and reads 8): shorter than a footer is damaged, unread.
    let directory = index.directory();
    for file in metas.list_segment_files() {
        if !directory.exists(&file).map_err(|e| e.to_string())? {
            continue;
        }
        let len = std::fs::metadata(dir.join(&file)).map_or(0, |m| m.len());
        if len < FOOTER_BYTES
            || !directory
                .validate_checksum(&file)
                .map_err(|e| e.to_string())?
        {
            return Err(format!("{} is damaged", file.display()));
        }
    }
    index.tokenizers().register(TOKENIZER, analyzer());
    // Opening every segment, its terms and its slot column now surfaces a
    // missing file here rather than in a search.
    let reader: IndexReader = index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()
        .map_err(|e: tantivy::TantivyError| e.to_string())?;
    for segment in reader.searcher().segment_readers() {
        segment
            .inverted_index(fields.text)
            .map_err(|e| e.to_string())?;
        segment
            .fast_fields()
            .u64("slot")
            .map_err(|e| e.to_string())?;
    }
    Ok((index, reader, fields))
}

/// BM25 statistics over the chunks in one slot set: document count,
/// tokens and term frequencies count only those chunks.
struct Visible<'a> {
    searcher: &'a Searcher,
    slots: &'a SlotSet,
    docs: u64,
    tokens: u64,
}

impl<'a> Visible<'a> {
    fn new(searcher: &'a Searcher, slots: &'a SlotSet, text: Field) -> Result<Visible<'a>> {
        let (mut docs, mut tokens) = (0, 0);
        for segment in searcher.segment_readers() {
            let column = segment.fast_fields().u64("slot")?;
            let norms = segment.get_fieldnorms_reader(text)?;
            for doc in segment.doc_ids_alive() {
                if column.first(doc).is_some_and(|s| slots.contains(Slot(s))) {
                    docs += 1;
                    tokens += u64::from(norms.fieldnorm(doc));
                }
            }
        }
        Ok(Visible {
            searcher,
            slots,
            docs,
            tokens,
        })
    }
}

impl Bm25StatisticsProvider for Visible<'_> {
    fn total_num_tokens(&self, _field: Field) -> tantivy::Result<u64> {
        Ok(self.tokens)
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        Ok(self.docs)
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        let mut count = 0;
        for segment in self.searcher.segment_readers() {
            let Some(mut postings) = segment
                .inverted_index(term.field())?
                .read_postings(term, IndexRecordOption::Basic)?
            else {
                continue;
            };
            let column = segment.fast_fields().u64("slot")?;
            let alive = segment.alive_bitset();
            let mut doc = postings.doc();
            while doc != TERMINATED {
                let live = alive.is_none_or(|a| a.is_alive(doc));
                if live
                    && column
                        .first(doc)
                        .is_some_and(|s| self.slots.contains(Slot(s)))
                {
                    count += 1;
                }
                doc = postings.advance();
            }
        }
        Ok(count)
    }
}

impl KeywordIndex for TantivyKeywordIndex {
    fn upsert(&self, docs: &[KeywordDoc]) -> Result<()> {
        let writer = self.writer()?;
        let f = self.fields;
        for d in docs {
            writer.delete_term(Term::from_field_u64(f.slot, d.slot.0));
            writer.add_document(doc!(f.slot => d.slot.0, f.text => indexed_text(d)))?;
        }
        Ok(())
    }

    fn delete(&self, slots: &[Slot]) -> Result<()> {
        let writer = self.writer()?;
        for slot in slots {
            writer.delete_term(Term::from_field_u64(self.fields.slot, slot.0));
        }
        Ok(())
    }

    fn clear(&self) -> Result<()> {
        self.writer()?.delete_all_documents()?;
        Ok(())
    }

    fn commit(&self) -> Result<()> {
        let mut writer = self.writer()?;
        let mut commit = writer.prepare_commit()?;
        commit.set_payload(&self.owner);
        commit.commit()?;
        self.reader.reload()?;
        Ok(())
    }

    fn search(
        &self,
        query: &str,
        k: usize,
        allowed: Option<&std::sync::Arc<SlotSet>>,
    ) -> Result<Vec<(Slot, f32)>> {
        let f = self.fields;
        let query = words_query(f.text, query);
        let searcher = self.reader.searcher();
        let best = TopDocs::with_limit(k.max(1)).order_by_score();
        let top = match allowed {
            None => searcher.search(&query, &best)?,
            // Matches are checked against the set by their slot column as
            // they are collected: no query term per allowed slot. Scores
            // come from the statistics of the chunks in the set, so they
            // say nothing of chunks left out (hidden documents).
            Some(slots) => {
                let stats = Visible::new(&searcher, slots, f.text)?;
                let slots = slots.clone();
                let only = FilterCollector::new(
                    "slot".to_string(),
                    move |slot: u64| slots.contains(Slot(slot)),
                    best,
                );
                searcher.search_with_statistics_provider(&query, &only, &stats)?
            }
        };
        let mut hits = Vec::with_capacity(top.len());
        for (score, address) in top {
            let column = searcher
                .segment_reader(address.segment_ord)
                .fast_fields()
                .u64("slot")?;
            if let Some(slot) = column.first(address.doc_id) {
                hits.push((Slot(slot), score));
            }
        }
        Ok(hits)
    }

    fn count(&self) -> Result<u64> {
        Ok(self.reader.searcher().num_docs())
    }

    fn coverage(
        &self,
        question: &str,
        text: &str,
        allowed: Option<&std::sync::Arc<SlotSet>>,
    ) -> Result<f64> {
        let asked = asked_terms(question);
        if asked.is_empty() {
            // Nothing in particular is asked ("Tell me everything about
            // the handbook."), so nothing can be missing: whether the
            // documents are relevant at all is `min_score`'s call.
            return Ok(1.0);
        }
        let held = terms(text);
        let searcher = self.reader.searcher();
        // Statistics of the chunks the caller may see only: a term's
        // weight says nothing of hidden documents.
        let visible;
        let stats: &dyn Bm25StatisticsProvider = match allowed {
            Some(slots) => {
                visible = Visible::new(&searcher, slots, self.fields.text)?;
                &visible
            }
            None => &searcher,
        };
        let docs = stats.total_num_docs()?;
        let (mut all, mut found) = (0.0, 0.0);
        for term in &asked {
            let with = stats.doc_freq(&Term::from_field_text(self.fields.text, term))?;
            let weight = idf(docs, with);
            all += weight;
            if held.contains(term) {
                found += weight;
            }
        }
        Ok(if all > 0.0 { found / all } else { 0.0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_with(dir: &Path, texts: &[&str]) -> TantivyKeywordIndex {
        let owner = Owner {
            id: "test".into(),
            adopt_unowned: false,
        };
        let index = TantivyKeywordIndex::open(dir, &owner).unwrap();
        let docs: Vec<KeywordDoc> = texts
            .iter()
            .enumerate()
            .map(|(i, text)| KeywordDoc {
                slot: Slot(i as u64),
                title: String::new(),
                heading: String::new(),
                text: (*text).to_string(),
            })
            .collect();
        index.upsert(&docs).unwrap();
        index.commit().unwrap();
        index
    }

    #[test]
    fn scores_inside_a_slot_set_do_not_depend_on_chunks_outside_it() {
        // The same two visible chunks; hidden chunks that do or do not
        // hold the guessed word must not move the visible scores.
        let visible = [
            "the probe mentions quartzite and basalt",
            "basalt only here",
        ];
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let with_word = index_with(
            dirs[0].path(),
            &[
                visible[0],
                visible[1],
                "hidden quartzite codeword",
                "hidden quartzite",
            ],
        );
        let without = index_with(
            dirs[1].path(),
            &[
                visible[0],
                visible[1],
                "hidden other words",
                "hidden nothing",
            ],
        );
        let mut slots = SlotSet::default();
        slots.insert(Slot(0));
        slots.insert(Slot(1));
        let slots = std::sync::Arc::new(slots);
        let a = with_word
            .search("quartzite basalt", 5, Some(&slots))
            .unwrap();
        let b = without.search("quartzite basalt", 5, Some(&slots)).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a, b, "hidden chunks changed what a restricted reader sees");
        // Without a slot set the whole index counts (and the hidden
        // chunks do change the scores: the test can tell).
        let a = with_word.search("quartzite", 5, None).unwrap();
        let b = without.search("quartzite", 5, None).unwrap();
        assert_ne!(a[0].1, b[0].1);
    }

    #[test]
    fn a_question_is_words_never_query_syntax() {
        let dir = tempfile::tempdir().unwrap();
        let index = index_with(
            dir.path(),
            &[
                "gc.auto: above this many loose objects, git gc --auto packs them.",
                "Prune loose objects older than two weeks.",
                "The effective_cache_size setting: the default is 4GB.",
                "effective planning: the size of a cache.",
            ],
        );
        let top = |q: &str| index.search(q, 5, None).unwrap();
        // `--auto` and `-x` are options, not "must not": the chunk holding
        // them is found, and first.
        assert_eq!(
            top("How many loose objects make git gc --auto pack?")[0].0,
            Slot(0)
        );
        assert_eq!(top("what does -auto do")[0].0, Slot(0));
        // `+`, `AND`, `field:`, quotes and brackets are plain text.
        for q in [
            "+prune AND older:weeks \"loose objects",
            "(prune) [older TO weeks] ^2 NOT*",
        ] {
            assert_eq!(top(q)[0].0, Slot(1), "{q}");
        }
        // A word the analyzer cuts in several stays a phrase.
        assert_eq!(top("default effective_cache_size")[0].0, Slot(2));
    }

    #[test]
    fn coverage_weighs_what_a_question_asks_by_rarity() {
        let dir = tempfile::tempdir().unwrap();
        let index = index_with(
            dir.path(),
            &[
                "Third-party API keys are rotated every 90 days by the owning team.",
                "The team rotates the on-call schedule every Monday.",
                "The team meets every Monday.",
                "Keys for the office are kept by reception.",
            ],
        );
        let source = "Third-party API keys are rotated every 90 days by the owning team.";
        let covered = |q: &str| index.coverage(q, source, None).unwrap();
        // Every term asked is in the source: question words do not count.
        assert_eq!(covered("How often are third-party API keys rotated?"), 1.0);
        // A rare term the source lacks weighs more than a common one.
        let rare_missing = covered("How often are API keys rotated by the zebrafalcon?");
        let common_missing = covered("How often are API keys rotated by the team on Monday?");
        assert!(
            rare_missing < common_missing,
            "{rare_missing} vs {common_missing}"
        );
        assert!(rare_missing < 0.6, "{rare_missing}");
        // On the subject, but not what the source covers.
        assert!(covered("Which VPN client must employees install?") < 0.2);
        // Nothing but question and request words: nothing can be missing.
        assert_eq!(covered("How and why?"), 1.0);
        assert_eq!(covered("Tell me everything about the handbook."), 1.0);
    }

    #[test]
    fn coverage_inside_a_slot_set_does_not_depend_on_chunks_outside_it() {
        let visible = ["alpha beta gamma", "beta only"];
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let with_word = index_with(
            dirs[0].path(),
            &[visible[0], visible[1], "hidden delta", "delta"],
        );
        let without = index_with(
            dirs[1].path(),
            &[visible[0], visible[1], "hidden other", "none"],
        );
        let mut slots = SlotSet::default();
        slots.insert(Slot(0));
        slots.insert(Slot(1));
        let slots = std::sync::Arc::new(slots);
        let question = "alpha delta beta";
        let a = with_word
            .coverage(question, visible[1], Some(&slots))
            .unwrap();
        let b = without
            .coverage(question, visible[1], Some(&slots))
            .unwrap();
        assert_eq!(a, b, "hidden chunks changed a restricted reader's coverage");
        let a = with_word.coverage(question, visible[1], None).unwrap();
        let b = without.coverage(question, visible[1], None).unwrap();
        assert_ne!(a, b);
    }
}

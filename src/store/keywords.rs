//! The tantivy-backed [`KeywordIndex`]: BM25 over chunk text, with the
//! document title and heading path as separately boosted fields. Each entry
//! is keyed by its slot (an indexed fast field), so upserts are
//! delete-then-add and replaying a pending entry twice is harmless.

use std::path::Path;
use std::sync::Mutex;

use tantivy::collector::TopDocs;
use tantivy::query::QueryParser;
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, Term, doc};

use super::{KeywordDoc, KeywordIndex};
use crate::error::{Error, Result};
use crate::types::Slot;

/// Memory for tantivy's indexing buffer.
const WRITER_MEMORY_BYTES: usize = 64 * 1024 * 1024;
const TOKENIZER: &str = "en_stem";

/// tantivy-backed keyword index.
pub struct TantivyKeywordIndex {
    index: Index,
    writer: Mutex<IndexWriter>,
    reader: IndexReader,
    fields: Fields,
}

#[derive(Clone, Copy)]
struct Fields {
    slot: Field,
    title: Field,
    heading: Field,
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
    let title = builder.add_text_field("title", text_options.clone());
    let heading = builder.add_text_field("heading", text_options.clone());
    let text = builder.add_text_field("text", text_options);
    (
        builder.build(),
        Fields {
            slot,
            title,
            heading,
            text,
        },
    )
}

impl TantivyKeywordIndex {
    /// Opens (or creates) the index in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let (schema, fields) = schema();
        let directory = tantivy::directory::MmapDirectory::open(dir)
            .map_err(|e| Error::store("keywords", e))?;
        let index = Index::open_or_create(directory, schema)?;
        let writer = index
            .writer_with_num_threads(1, WRITER_MEMORY_BYTES)
            .map_err(|e| match e {
                tantivy::TantivyError::LockFailure(..) => Error::IndexLocked {
                    index: dir.parent().unwrap_or(dir).to_path_buf(),
                },
                other => Error::from(other),
            })?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(TantivyKeywordIndex {
            index,
            writer: Mutex::new(writer),
            reader,
            fields,
        })
    }

    fn writer(&self) -> Result<std::sync::MutexGuard<'_, IndexWriter>> {
        self.writer
            .lock()
            .map_err(|_| Error::store("keywords", "writer lock poisoned"))
    }
}

impl KeywordIndex for TantivyKeywordIndex {
    fn upsert(&self, docs: &[KeywordDoc]) -> Result<()> {
        let writer = self.writer()?;
        let f = self.fields;
        for d in docs {
            writer.delete_term(Term::from_field_u64(f.slot, d.slot.0));
            writer.add_document(doc!(
                f.slot => d.slot.0,
                f.title => d.title.as_str(),
                f.heading => d.heading.as_str(),
                f.text => d.text.as_str(),
            ))?;
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

    fn commit(&self) -> Result<()> {
        self.writer()?.commit()?;
        self.reader.reload()?;
        Ok(())
    }

    fn search(&self, query: &str, k: usize) -> Result<Vec<(Slot, f32)>> {
        let f = self.fields;
        let mut parser = QueryParser::for_index(&self.index, vec![f.title, f.heading, f.text]);
        parser.set_field_boost(f.title, 1.5);
        parser.set_field_boost(f.heading, 1.5);
        let (query, _ignored_syntax_errors) = parser.parse_query_lenient(query);
        let searcher = self.reader.searcher();
        let top = searcher.search(&query, &TopDocs::with_limit(k.max(1)).order_by_score())?;
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
}

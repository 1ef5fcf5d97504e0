//! The audit trail: one structured event per write (ingest, upload,
//! delete, remove, key changes) with who did it (a key id, never a secret),
//! the collection, the action, its counts and, for document writes, the
//! ids of the documents touched. Document writes (upload, delete, remove)
//! are recorded by the engine itself, whoever calls it; a watcher records
//! each batch it applies. Events go through tracing
//! under the target `lore::audit`, so they land wherever logs go (JSON with
//! `--log-json`) and, with `lore serve --audit-log FILE`, in that file too.

/// The tracing target of audit events.
pub const TARGET: &str = "lore::audit";

/// Records one write by `actor` (a key id, `local` or `cli`).
pub fn record(actor: &str, collection: &str, action: &str, documents: usize, chunks: usize) {
    record_ids(actor, collection, action, &[], documents, chunks);
}

/// Records one write by `actor` that touched the documents `ids` (the
/// engine's own document writes: upload, delete, remove).
pub fn record_ids(
    actor: &str,
    collection: &str,
    action: &str,
    ids: &[crate::types::DocId],
    documents: usize,
    chunks: usize,
) {
    let ids = ids
        .iter()
        .map(|id| id.0.as_str())
        .collect::<Vec<_>>()
        .join(",");
    tracing::info!(
        target: TARGET,
        actor,
        collection,
        action,
        documents,
        chunks,
        ids,
        "audit"
    );
}

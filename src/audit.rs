//! The audit trail: one structured event per write (ingest, upload,
//! delete, remove, key changes) with who did it (a key id, never a secret),
//! the collection, the action and its counts. Events go through tracing
//! under the target `lore::audit`, so they land wherever logs go (JSON with
//! `--log-json`) and, with `lore serve --audit-log FILE`, in that file too.

/// The tracing target of audit events.
pub const TARGET: &str = "lore::audit";

/// Records one write by `actor` (a key id, `local` or `cli`).
pub fn record(actor: &str, collection: &str, action: &str, documents: usize, chunks: usize) {
    tracing::info!(
        target: TARGET,
        actor,
        collection,
        action,
        documents,
        chunks,
        "audit"
    );
}

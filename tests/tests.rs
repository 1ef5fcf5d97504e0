//! Integration tests: one binary, real models, the built CLI.

mod util;

mod ask;
mod closed;
mod collections;
mod conversation;
mod crash;
mod embedding;
mod faults;
mod fuzz;
mod hostile;
mod import;
mod ingest;
mod layers;
mod parity;
mod replicas;
mod search;
mod serve;
mod spark;
mod techniques;
mod watch;

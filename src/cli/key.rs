//! `lore key create|list|revoke`: the API keys of a server.

use clap::Subcommand;
use lore::keys::{KeyStore, Role};

use super::{CLI_ACTOR, Global, config, print_json};
#[derive(Subcommand)]
pub enum KeyCommand {
    /// Create a key and print its secret (shown this once only).
    Create {
        /// What it may do.
        #[arg(long, value_enum)]
        role: Role,
        /// Collections it may use, comma-separated, or `*` for all.
        #[arg(long, value_delimiter = ',', default_value = "*")]
        collections: Vec<String>,
        /// Groups it belongs to (documents with an access list), comma-separated.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// Print the key (secret included) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List keys (ids, roles, collections, groups; never secrets).
    List {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by id; a running server stops accepting it at once.
    Revoke {
        /// The key id (from `lore key list`).
        id: String,
    },
}

/// `lore key`: the key store of the index directory (no index lock
/// needed, so it works while a server runs; the server sees changes at once).
pub fn run(global: &Global, command: KeyCommand) -> anyhow::Result<()> {
    let config = config(global, |_| {})?;
    let store = KeyStore::open(&config.index);
    match command {
        KeyCommand::Create {
            role,
            collections,
            groups,
            json,
        } => {
            let (key, secret) = store.create(CLI_ACTOR, role, collections, groups)?;
            if json {
                return print_json(&serde_json::json!({ "key": key, "secret": secret }));
            }
            println!("{secret}");
            eprintln!(
                "lore: created key {}: {}. The secret above is shown only this once.",
                key.id,
                key_summary(&key)
            );
            Ok(())
        }
        KeyCommand::List { json } => {
            let keys = store.list()?;
            if json {
                return print_json(&keys);
            }
            if keys.is_empty() {
                println!("no keys (LORE_API_KEYS may still configure some)");
            }
            for key in keys {
                println!("{}  {}", key.id, key_summary(&key));
            }
            Ok(())
        }
        KeyCommand::Revoke { id } => {
            let key = store.revoke(CLI_ACTOR, &id)?;
            println!("revoked key {} ({})", key.id, key.role);
            Ok(())
        }
    }
}

/// "write, collections a,b, groups sre" (groups "-" when none).
pub fn key_summary(key: &lore::keys::KeyRecord) -> String {
    let groups = if key.groups.is_empty() {
        "-".to_string()
    } else {
        key.groups.join(",")
    };
    format!(
        "{}, collections {}, groups {groups}",
        key.role,
        key.collections.join(",")
    )
}

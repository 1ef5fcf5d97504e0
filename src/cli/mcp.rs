//! `lore mcp`: the Model Context Protocol server over stdin and stdout,
//! for assistants and IDEs that start lore themselves.

use std::sync::Arc;

use lore::Engine;
use lore::keys::Principal;

use super::{Global, config};

/// The audit and log name of what an MCP client does through stdio.
const MCP_ACTOR: &str = "mcp";

pub fn run(global: &Global) -> anyhow::Result<()> {
    let config = config(global, |_| {})?;
    let engine = Engine::open_existing(config)?;
    // The client is the machine's own user, as at the command line.
    lore::mcp::serve_stdio(Arc::new(engine), Principal::owner(MCP_ACTOR))?;
    Ok(())
}

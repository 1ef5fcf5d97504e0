//! `lore doctor`: the support bundle. Checks models, index, configuration,
//! CPU and server setup, prints what to fix; exit 1 when something must be.

use std::path::{Path, PathBuf};

use clap::Args;
use lore::Config;
use lore::doctor::{self, Check, Layers, Outcome};

use super::{Global, config, print_json};

#[derive(Args)]
pub struct DoctorArgs {
    /// Print the checks as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(global: &Global, args: DoctorArgs) -> anyhow::Result<()> {
    let file = global.config.clone().or_else(|| {
        Path::new(lore::config::CONFIG_FILE)
            .is_file()
            .then(|| PathBuf::from(lore::config::CONFIG_FILE))
    });
    let before_env = match &file {
        Some(path) => Config::from_file(path).ok(),
        None => Some(Config::default()),
    };
    let layers = Layers {
        file,
        before_env,
        before_flags: Config::load(global.config.as_deref()).ok(),
    };
    let checks = match config(global, |_| {}) {
        Ok(config) => doctor::examine(&config, &layers),
        // A configuration lore refuses is the first thing to fix; the
        // rest cannot be checked against it.
        Err(err) => vec![Check {
            area: "config",
            name: "settings".into(),
            outcome: Outcome::Fail,
            detail: format!("{err:#}"),
            fix: Some("correct the setting it names (lore.toml, LORE_*, or the flag)".into()),
        }],
    };
    let failed = checks.iter().any(|c| c.outcome == Outcome::Fail);
    if args.json {
        print_json(&serde_json::json!({ "checks": checks, "ok": !failed }))?;
    } else {
        print!("{}", doctor::render(&checks));
    }
    if failed {
        anyhow::bail!("lore doctor found something to fix");
    }
    Ok(())
}

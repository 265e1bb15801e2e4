//! `mx6gate run`: the daemon.
use std::path::Path;

use anyhow::Result;

use super::ModeArg;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Interface to protect (repeatable); replaces `interfaces` from the config.
    #[arg(long = "iface", value_name = "IF")]
    pub ifaces: Vec<String>,
    /// Set the mode on start, as `mx6gate mode` would (persisted).
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
}

pub fn run(config: &Path, args: Args) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(crate::daemon::run(
        config,
        args.ifaces,
        args.mode.map(Into::into),
    ))
}

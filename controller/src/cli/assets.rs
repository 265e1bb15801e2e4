//! `mx6gate generate-assets DIR` (hidden): man pages and shell completions
//! made from the clap definitions themselves, so the packaged docs can never
//! drift from the binary. `cargo xtask deb` calls it.
//!
//! DIR/man/mx6gate.1, mx6gate-run.1, mx6gate-partner-add.1, …
//! DIR/completions/mx6gate.bash, _mx6gate (zsh), mx6gate.fish
use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;

pub fn run(dir: &Path) -> Result<()> {
    let man = dir.join("man");
    let comp = dir.join("completions");
    for d in [&man, &comp] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    // One page per (visible) verb and the top-level page that lists them.
    clap_mangen::generate_to(Cli::command(), &man)
        .with_context(|| format!("writing man pages into {}", man.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = Cli::command();
        clap_complete::generate_to(shell, &mut cmd, "mx6gate", &comp)
            .with_context(|| format!("writing {shell} completions into {}", comp.display()))?;
    }
    println!(
        "man pages in {}, completions in {}",
        man.display(),
        comp.display()
    );
    Ok(())
}

//! `mx6gate generate-assets DIR` (hidden): the man pages and shell
//! completions, made from what they document, so the packaged docs can
//! never drift from the binary. `cargo xtask deb` calls it.
//!
//! DIR/man/mx6gate.8            — the overview, hand-written (mx6gate.8 here)
//! DIR/man/mx6gate-run.8, …     — one per verb, from the clap definitions
//! DIR/man/mx6gate.toml.5       — from the annotated example config
//! DIR/completions/mx6gate.bash, _mx6gate (zsh), mx6gate.fish
//!
//! Section 8 for the command and its verbs (it runs as root: Debian's
//! convention for system administration commands), 5 for the file format.
mod config_page;
mod roff;

use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const OVERVIEW: &str = include_str!("mx6gate.8");

pub fn run(dir: &Path) -> Result<()> {
    let man = dir.join("man");
    let comp = dir.join("completions");
    for d in [&man, &comp] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    for (name, page) in pages()? {
        let p = man.join(&name);
        std::fs::write(&p, page).with_context(|| format!("writing {}", p.display()))?;
    }
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

/// Every page: (file name, roff text).
pub fn pages() -> Result<Vec<(String, String)>> {
    let mut out = vec![
        (
            "mx6gate.8".to_string(),
            OVERVIEW.replace("@VERSION@", VERSION),
        ),
        ("mx6gate.toml.5".to_string(), config_page::page(VERSION)?),
    ];
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    verb_pages(&cmd, &mut out)?;
    Ok(out)
}

/// One page per visible verb (and per sub-verb: mx6gate-partner-add), in
/// section 8, each pointing back at the overview and the config page.
fn verb_pages(parent: &clap::Command, out: &mut Vec<(String, String)>) -> Result<()> {
    for cmd in parent.get_subcommands().filter(|c| !c.is_hide_set()) {
        verb_pages(cmd, out)?;
        let man = clap_mangen::Man::new(cmd.clone())
            .section("8")
            .manual("mx6gate")
            .source(format!("mx6gate {VERSION}"));
        let mut page = Vec::new();
        man.render(&mut page)?;
        let mut page = String::from_utf8(page)?;
        page.push_str(
            ".SH \"SEE ALSO\"\n\\fBmx6gate\\fR(8) (modes, the rollout, files, signals, exit status), \
             \\fBmx6gate.toml\\fR(5)\n",
        );
        out.push((man.get_filename(), page));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overview_names_every_verb_page_and_the_sections_it_must_have() {
        let pages = pages().unwrap();
        let overview = &pages[0].1;
        for (name, _) in &pages[2..] {
            let stem = name.strip_suffix(".8").unwrap();
            assert!(
                overview.contains(&format!("\\fB{}\\fR(8)", stem.replace('-', "\\-"))),
                "mx6gate.8 does not name {stem}(8)"
            );
        }
        for section in [
            "NAME",
            "SYNOPSIS",
            "DESCRIPTION",
            "COMMANDS",
            "THE ROLLOUT IN BRIEF",
            "FILES",
            "SIGNALS",
            "EXIT STATUS",
            "EXAMPLES",
            "SEE ALSO",
        ] {
            assert!(
                overview.contains(&format!("\n.SH {section}\n")),
                "mx6gate.8 has no {section}"
            );
        }
        assert!(!overview.contains("@VERSION@"));
        // The verbs, in section 8, each naming the overview.
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        for want in [
            "mx6gate-run.8",
            "mx6gate-partner-add.8",
            "mx6gate-partner-list.8",
            "mx6gate-doctor.8",
            "mx6gate-top.8",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("generate-assets")));
        for (name, page) in &pages[2..] {
            assert!(
                page.starts_with(".ie \\n(.g .ds Aq \\(aq\n") || page.contains(".TH "),
                "{name}"
            );
            assert!(page.contains(" 8 "), "{name}: not section 8");
            assert!(page.contains("\\fBmx6gate\\fR(8)"), "{name}");
        }
    }
}

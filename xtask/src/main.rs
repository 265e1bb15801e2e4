//! `cargo xtask …`: everything that is more than one cargo command.
mod bench;
mod bench_responder;
mod build_ebpf;
mod deb;
mod lab;

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "mx6gate build, test, lab and bench tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the eBPF object and the controller (release).
    Build,
    /// Build the eBPF object only.
    BuildEbpf,
    /// Build the Debian package into target/debian/ (binary, systemd unit,
    /// config, man pages, completions).
    Deb,
    /// Build, then demo the gate in a namespace lab with Postfix and swaks.
    Lab {
        /// Leave the lab running and print how to enter it.
        #[arg(long)]
        keep: bool,
    },
    /// Run every test suite, privileged ones included (needs root).
    Test {
        /// Extra arguments for `cargo test`.
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Benchmarks (needs root): per-packet cost, wire drop rate, control
    /// plane, memory; writes bench/RESULTS.md and bench/per-packet.svg.
    Bench(bench::BenchArgs),
    /// Responder benchmark (needs root): the defer-mode responder vs the
    /// real Postfix smtpd, same clients; writes bench/RESPONDER.md.
    BenchResponder {
        /// N = 10, 1 s windows; writes target/bench-responder-quick.md.
        #[arg(long)]
        quick: bool,
    },
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::BuildEbpf => {
            let obj = build_ebpf::build()?;
            println!("eBPF object: {}", obj.display());
        }
        Cmd::Build => {
            build_all()?;
        }
        Cmd::Deb => {
            let deb = deb::build()?;
            println!("Debian package: {}", deb.display());
        }
        Cmd::Lab { keep } => lab::lab(keep)?,
        Cmd::Test { args } => {
            // The package builds the binary too; the deb_package suite
            // installs exactly this file.
            let deb = deb::build()?;
            let bin = workspace_root().join("target/release/mx6gate");
            run(Command::new("cargo")
                .args(["test", "--workspace", "--release"])
                .args(&args)
                .env("MX6GATE_BIN", bin)
                .env("MX6GATE_DEB", deb)
                .env("MX6GATE_REQUIRE_PRIV", "1"))?;
        }
        Cmd::Bench(args) => bench::main(args)?,
        Cmd::BenchResponder { quick } => bench_responder::main(quick)?,
    }
    Ok(())
}

/// eBPF object, then the controller that embeds it. Returns the binary.
pub fn build_all() -> Result<PathBuf> {
    build_ebpf::build()?;
    run(Command::new("cargo").args(["build", "--release", "-p", "mx6gate"]))?;
    Ok(workspace_root().join("target/release/mx6gate"))
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

//! `cargo xtask …`: everything that is more than one cargo command.
mod bench;
mod bench_responder;
mod build_ebpf;
mod check;
mod deb;
mod lab;
mod measure;
mod vm;

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
    /// Format, clippy (-D warnings; the workspace, and the eBPF crate on
    /// bpfel-unknown-none) and rustdoc (-D warnings): what CI checks first.
    Check,
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
    /// Run every test suite, privileged ones included (needs root); with
    /// --kernel, the privileged suites on Debian's stock kernels under qemu.
    Test {
        /// Boot Debian's stock kernel of this series (5.10, 6.1, 6.12, a
        /// comma-separated list, or all) and run the privileged suites in
        /// it: the full set on 6.1, the core set elsewhere.
        #[arg(long, value_name = "VERSION")]
        kernel: Option<String>,
        /// With --kernel: run this suite (repeatable) instead of the
        /// kernel's set.
        #[arg(long, requires = "kernel")]
        suite: Vec<String>,
        /// Extra arguments for `cargo test`; with --kernel, for each test
        /// binary (a test name filter, --test-threads N …).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Run one command in a guest booted with Debian's stock kernel of this
    /// series (as `test --kernel` boots it), for looking into a failure.
    Vm {
        /// 5.10, 6.1 or 6.12.
        kernel: String,
        /// The command and its arguments (after `--`).
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
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
        Cmd::Check => check::check()?,
        Cmd::Deb => {
            let deb = deb::build()?;
            println!("Debian package: {}", deb.display());
        }
        Cmd::Lab { keep } => lab::lab(keep)?,
        Cmd::Test {
            kernel,
            suite,
            args,
        } => {
            // The package builds the binary too; the deb_package suite
            // installs exactly this file.
            let deb = deb::build()?;
            let bin = workspace_root().join("target/release/mx6gate");
            if let Some(kernels) = kernel {
                return vm::test(&vm::Options {
                    kernels,
                    suites: suite,
                    test_args: args,
                    bin,
                    deb,
                });
            }
            // xtask's own unit tests (the bench report's PASS/MISS logic and
            // its golden text) live behind the `bench` feature, which the
            // workspace run leaves off.
            run(Command::new("cargo").args([
                "test",
                "--release",
                "-p",
                "xtask",
                "--features",
                "bench",
                "--bins",
            ]))?;
            run(Command::new("cargo")
                .args(["test", "--workspace", "--release"])
                .args(&args)
                .env("MX6GATE_BIN", bin)
                .env("MX6GATE_DEB", deb)
                .env("MX6GATE_REQUIRE_PRIV", "1"))?;
        }
        Cmd::Vm { kernel, command } => {
            let rc = vm::exec(&kernel, &command)?;
            std::process::exit(rc);
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

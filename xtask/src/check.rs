//! `cargo xtask check`: the guard rails CI runs before any suite — format
//! (the pinned nightly's rustfmt, for rustfmt.toml's nightly-only import
//! options), clippy with warnings denied for the workspace and for the
//! eBPF crate on its own target, and rustdoc with warnings denied. Each
//! step says what failed; none changes a file.
use std::process::Command;

use anyhow::{Context, Result};

use crate::{build_ebpf, run, workspace_root};

pub fn check() -> Result<()> {
    let nightly = build_ebpf::toolchain()?;
    let root = workspace_root();
    let ebpf = root.join("ebpf");
    let step = |what: &str, cmd: &mut Command| {
        eprintln!("xtask check: {what}");
        run(cmd.env_remove("RUSTUP_TOOLCHAIN")).with_context(|| format!("xtask check: {what}"))
    };
    step(
        "rustfmt (workspace)",
        Command::new("cargo").current_dir(&root).args([
            &format!("+{nightly}"),
            "fmt",
            "--all",
            "--check",
        ]),
    )?;
    step(
        "rustfmt (ebpf)",
        Command::new("cargo")
            .current_dir(&ebpf)
            .args([&format!("+{nightly}"), "fmt", "--check"]),
    )?;
    // The controller embeds the eBPF object (its build script refuses to
    // build without one): build it first.
    build_ebpf::build()?;
    step(
        "clippy (workspace, every target and feature)",
        Command::new("cargo").current_dir(&root).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--release",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    step(
        "clippy (ebpf, bpfel-unknown-none)",
        Command::new("cargo")
            .current_dir(&ebpf)
            .env_remove("RUSTC")
            .env_remove("RUSTC_WRAPPER")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .args([&format!("+{nightly}"), "clippy", "--release"])
            .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
            .arg("--target-dir")
            .arg(root.join("target/ebpf-clippy"))
            .args(["--", "-D", "warnings"]),
    )?;
    step(
        "rustdoc (workspace)",
        Command::new("cargo")
            .current_dir(&root)
            .env("RUSTDOCFLAGS", "-D warnings")
            .args(["doc", "--workspace", "--no-deps", "--release"]),
    )?;
    eprintln!("xtask check: all clean");
    Ok(())
}

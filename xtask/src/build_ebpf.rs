//! Builds the eBPF object with the recipe verified on these machines
//! (DESIGN.md): nightly + build-std gives one fat-LTO bitcode member in a
//! staticlib, and the toolchain's own llc turns it into a BPF ELF object.
//! No bpf-linker, so no libLLVM version to match.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::{run, workspace_root};

/// The dated nightly pinned in ebpf/rust-toolchain.toml (its `channel`),
/// read from there so that the pin lives in one file.
pub fn toolchain() -> Result<String> {
    let path = workspace_root().join("ebpf/rust-toolchain.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .find_map(|l| {
            let v = l.trim().strip_prefix("channel")?.trim().strip_prefix('=')?;
            Some(v.trim().trim_matches('"').to_string())
        })
        .with_context(|| format!("{}: no `channel = \"…\"` line", path.display()))
}

/// Where the object lands; the controller's build script embeds it from here.
pub fn object_path() -> PathBuf {
    workspace_root().join("target/bpf/mx6gate.bpf.o")
}

pub fn build() -> Result<PathBuf> {
    let toolchain = toolchain()?;
    ensure_components(&toolchain)?;
    let root = workspace_root();
    let ebpf = root.join("ebpf");
    let target_dir = root.join("target/ebpf");
    run(Command::new("cargo")
        .current_dir(&ebpf)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .args([&format!("+{toolchain}"), "build", "--release"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir))?;
    let lib = target_dir.join("bpfel-unknown-none/release/libmx6gate_ebpf.a");
    let bitcode = extract_single_member(&toolchain, &lib, &target_dir.join("bitcode"))?;
    let out = object_path();
    std::fs::create_dir_all(out.parent().unwrap())?;
    run(Command::new(llc(&toolchain)?)
        .args(["-march=bpfel", "-mcpu=v3", "-O3", "-filetype=obj"])
        .arg(&bitcode)
        .arg("-o")
        .arg(&out))?;
    Ok(out)
}

/// rust-src for build-std, llvm-tools for llc. rustup skips what is there.
fn ensure_components(toolchain: &str) -> Result<()> {
    let installed = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", toolchain])
        .output()
        .context("running rustup")?;
    let list = String::from_utf8_lossy(&installed.stdout);
    if installed.status.success() && list.contains("rust-src") && list.contains("llvm-tools") {
        return Ok(());
    }
    run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "llvm-tools",
        "--toolchain",
        toolchain,
    ]))
}

fn llc(toolchain: &str) -> Result<PathBuf> {
    let out = Command::new("rustc")
        .args([&format!("+{toolchain}"), "--print", "sysroot"])
        .env_remove("RUSTUP_TOOLCHAIN")
        .output()
        .context("asking rustc for its sysroot")?;
    let sysroot = String::from_utf8(out.stdout)?.trim().to_string();
    let llc = Path::new(&sysroot).join("lib/rustlib/x86_64-unknown-linux-gnu/bin/llc");
    if !llc.exists() {
        bail!(
            "{} not found: is the llvm-tools component installed?",
            llc.display()
        );
    }
    Ok(llc)
}

/// The staticlib must hold exactly one bitcode member: fat LTO merged core
/// and the programs. More than one means LTO did not run.
fn extract_single_member(toolchain: &str, lib: &Path, dir: &Path) -> Result<PathBuf> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let ar = llc(toolchain)?.with_file_name("llvm-ar");
    run(Command::new(&ar).current_dir(dir).arg("x").arg(lib))?;
    let members: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "o"))
        .collect();
    match members.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "{} holds {} object members, expected one LTO bitcode member",
            lib.display(),
            members.len()
        ),
    }
}

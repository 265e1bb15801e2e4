//! Embeds the eBPF object that `cargo xtask build` produced. The controller
//! and its programs ship as one binary, so they can never be out of step.
use std::path::PathBuf;

fn main() {
    let obj = match std::env::var_os("MX6GATE_BPF_OBJ") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap())
            .join("../target/bpf/mx6gate.bpf.o"),
    };
    println!("cargo:rerun-if-env-changed=MX6GATE_BPF_OBJ");
    println!("cargo:rerun-if-changed={}", obj.display());
    if !obj.exists() {
        panic!(
            "eBPF object {} is missing: run `cargo xtask build` (it builds the object, then this crate)",
            obj.display()
        );
    }
    println!(
        "cargo:rustc-env=MX6GATE_BPF_OBJ={}",
        obj.canonicalize().unwrap().display()
    );
}

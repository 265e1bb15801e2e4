//! The guest's initramfs: a static busybox, the modules that mount the
//! host's root (virtio PCI, 9p over virtio, overlayfs) in dependency
//! order, and `init.sh` as PID 1. Built once per kernel into the cache.
use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use super::fetch::Unpacked;

/// What init needs before it can reach the host's root. virtio_pci is the
/// transport (nothing depends on it, so it is named), virtio_rng feeds the
/// guest's entropy pool. Built-in ones (virtio on 6.12) are skipped.
const ROOTS: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "overlay", "virtio_rng"];

/// Debian's statically linked busybox (package busybox-static).
const BUSYBOX: &str = "/bin/busybox";

pub const INIT: &str = include_str!("init.sh");

/// `<kernel root>/initramfs.cpio`, built unless it is newer than init.sh's
/// contents say (the file embeds a hash of them).
pub fn build(k: &Unpacked) -> Result<PathBuf> {
    let out = k.root.join("initramfs.cpio");
    let stamp = k.root.join("initramfs.stamp");
    let want = format!("{:016x}", fnv1a(INIT.as_bytes()));
    if out.exists() && fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str()) {
        return Ok(out);
    }
    if !Path::new(BUSYBOX).exists() {
        bail!("{BUSYBOX} is missing: install busybox-static (scripts/install-deps.sh)");
    }
    let dir = k.root.join("initramfs");
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    for d in ["bin", "dev", "proc", "sys", "modules"] {
        fs::create_dir_all(dir.join(d))?;
    }
    fs::copy(BUSYBOX, dir.join("bin/busybox"))?;
    fs::write(dir.join("init"), INIT)?;
    set_mode(&dir.join("init"), 0o755)?;
    let mut order = String::new();
    for m in module_order(&k.modules())? {
        let name = store_module(&k.modules().join(&m), &dir.join("modules"))?;
        order.push_str(&name);
        order.push('\n');
    }
    fs::write(dir.join("modules/order"), order)?;
    // newc archive of the tree, paths relative to it.
    let list = Command::new("find")
        .arg(".")
        .current_dir(&dir)
        .output()
        .context("listing the initramfs tree")?;
    let mut cpio = Command::new("cpio")
        .args(["--quiet", "-o", "-H", "newc", "-R", "0:0"])
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(fs::File::create(&out)?)
        .spawn()
        .context("running cpio (package cpio)")?;
    use std::io::Write;
    cpio.stdin.take().unwrap().write_all(&list.stdout)?;
    if !cpio.wait()?.success() {
        bail!("cpio failed building {}", out.display());
    }
    fs::write(&stamp, want)?;
    Ok(out)
}

/// The modules behind [`ROOTS`], each after the ones it needs (paths
/// relative to the module directory, from its modules.dep).
fn module_order(moddir: &Path) -> Result<Vec<String>> {
    let dep = fs::read_to_string(moddir.join("modules.dep"))
        .with_context(|| format!("reading {}/modules.dep", moddir.display()))?;
    let builtin = fs::read_to_string(moddir.join("modules.builtin")).unwrap_or_default();
    // "kernel/fs/9p/9p.ko: kernel/fs/netfs/netfs.ko kernel/net/9p/9pnet.ko"
    let needs: BTreeMap<&str, Vec<&str>> = dep
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, d)| (m, d.split_whitespace().collect()))
        .collect();
    fn visit<'a>(m: &'a str, needs: &BTreeMap<&'a str, Vec<&'a str>>, order: &mut Vec<String>) {
        if order.iter().any(|o| o == m) {
            return;
        }
        for d in needs.get(m).into_iter().flatten() {
            visit(d, needs, order);
        }
        order.push(m.to_string());
    }
    let mut order = Vec::new();
    for root in ROOTS {
        match needs.keys().find(|m| module_name(m) == *root) {
            Some(m) => visit(m, &needs, &mut order),
            None if builtin.lines().any(|l| module_name(l) == *root) => {}
            None => bail!(
                "module {root} is neither in {}/modules.dep nor built in",
                moddir.display()
            ),
        }
    }
    Ok(order)
}

/// kernel/net/9p/9pnet_virtio.ko.xz → 9pnet_virtio (modprobe's spelling).
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split(".ko").next().unwrap_or(file).replace('-', "_")
}

/// Copies a module into the initramfs, decompressed (busybox insmod reads
/// plain .ko files only). Returns its file name there.
fn store_module(src: &Path, dir: &Path) -> Result<String> {
    let file = src.file_name().unwrap().to_string_lossy().to_string();
    let (name, tool) = match () {
        _ if file.ends_with(".ko.xz") => (file.trim_end_matches(".xz").to_string(), Some("xz")),
        _ if file.ends_with(".ko.zst") => (file.trim_end_matches(".zst").to_string(), Some("zstd")),
        _ if file.ends_with(".ko.gz") => (file.trim_end_matches(".gz").to_string(), Some("gzip")),
        _ => (file.clone(), None),
    };
    let dst = dir.join(&name);
    match tool {
        None => {
            fs::copy(src, &dst)?;
        }
        Some(t) => {
            let out = Command::new(t)
                .args(["-d", "-c"])
                .arg(src)
                .output()
                .with_context(|| format!("running {t} -d on {}", src.display()))?;
            if !out.status.success() {
                bail!("{t} -d {} failed", src.display());
            }
            fs::write(&dst, out.stdout)?;
        }
    }
    Ok(name)
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// A stable hash of init.sh, so a changed script rebuilds the archive.
fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, x| {
        (h ^ *x as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

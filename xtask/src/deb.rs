//! `cargo xtask deb`: the Debian package, built with plain `dpkg-deb
//! --build --root-owner-group` (no extra packaging tool to install).
//!
//! Contents: /usr/bin/mx6gate, the systemd unit, the annotated config as a
//! conffile (monitor mode, no interface: it never attaches on its own), an
//! empty partners.d/, man pages and bash/zsh/fish completions generated
//! from the clap definitions (`mx6gate generate-assets`), copyright and
//! changelog; maintainer scripts from packaging/debian/. Depends comes from
//! dpkg-shlibdeps on the binary.
use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::{run, workspace_root};

const UNIT: &str = "packaging/mx6gate.service";
const EXAMPLE_CONFIG: &str = "controller/mx6gate.example.toml";
const MAINTAINER_SCRIPTS: [&str; 3] = ["postinst", "prerm", "postrm"];

/// Build the package; returns the .deb's path.
pub fn build() -> Result<PathBuf> {
    let bin = crate::build_all()?;
    let root = workspace_root();
    let version = env!("CARGO_PKG_VERSION");
    let arch = stdout(Command::new("dpkg").arg("--print-architecture"))?;
    let work = root.join("target/deb");
    let pkg = work.join("root");
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }

    // The binary, stripped (debug info is not shipped).
    let dest = pkg.join("usr/bin/mx6gate");
    copy(&bin, &dest, 0o755)?;
    run(Command::new("strip")
        .args(["--strip-unneeded", "--remove-section=.comment"])
        .arg(&dest))?;

    copy(
        &root.join(UNIT),
        &pkg.join("lib/systemd/system/mx6gate.service"),
        0o644,
    )?;
    write(
        &pkg.join("etc/mx6gate/mx6gate.toml"),
        &packaged_config(&fs::read_to_string(root.join(EXAMPLE_CONFIG))?)?,
        0o644,
    )?;
    fs::create_dir_all(pkg.join("etc/mx6gate/partners.d"))?;

    // Man pages and completions from the binary's own clap definitions.
    let assets = work.join("assets");
    run(Command::new(&dest).arg("generate-assets").arg(&assets))?;
    let man1 = pkg.join("usr/share/man/man1");
    fs::create_dir_all(&man1)?;
    let mut pages: Vec<_> = fs::read_dir(assets.join("man"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    pages.sort();
    for page in pages {
        let name = page.file_name().unwrap().to_string_lossy().into_owned();
        gzip(&page, &man1.join(format!("{name}.gz")))?;
    }
    let comp = assets.join("completions");
    copy(
        &comp.join("mx6gate.bash"),
        &pkg.join("usr/share/bash-completion/completions/mx6gate"),
        0o644,
    )?;
    copy(
        &comp.join("_mx6gate"),
        &pkg.join("usr/share/zsh/vendor-completions/_mx6gate"),
        0o644,
    )?;
    copy(
        &comp.join("mx6gate.fish"),
        &pkg.join("usr/share/fish/vendor_completions.d/mx6gate.fish"),
        0o644,
    )?;

    let doc = pkg.join("usr/share/doc/mx6gate");
    copy(
        &root.join("packaging/debian/copyright"),
        &doc.join("copyright"),
        0o644,
    )?;
    // A native package (no Debian revision): its changelog is changelog.gz.
    let changelog = work.join("changelog");
    write(&changelog, &debian_changelog(version)?, 0o644)?;
    gzip(&changelog, &doc.join("changelog.gz"))?;

    // Control area.
    let control = pkg.join("DEBIAN");
    for s in MAINTAINER_SCRIPTS {
        copy(
            &root.join("packaging/debian").join(s),
            &control.join(s),
            0o755,
        )?;
    }
    write(
        &control.join("conffiles"),
        "/etc/mx6gate/mx6gate.toml\n",
        0o644,
    )?;
    let depends = shlib_depends(&work, &dest)?;
    let installed_kib = du_kib(&pkg)?;
    write(
        &control.join("control"),
        &format!(
            "Package: mx6gate\n\
             Version: {version}\n\
             Architecture: {arch}\n\
             Maintainer: mx6gate maintainers <mx6gate@example.org>\n\
             Installed-Size: {installed_kib}\n\
             Depends: {depends}\n\
             Section: net\n\
             Priority: optional\n\
             Description: IPv6 SMTP gate: partners in, everyone else back to IPv4\n \
             mx6gate lets a mail gateway accept IPv6 SMTP from an allowlist of\n \
             partner networks and turns every other IPv6 SMTP client away at the\n \
             TCP level (XDP and sk_lookup), by a reset, a drop or a 421 banner, so\n \
             the sender falls back to IPv4 at once. IPv4 is never touched.\n \
             .\n \
             Starts in monitor mode with no interface configured: name the\n \
             interfaces in /etc/mx6gate/mx6gate.toml, then enable mx6gate.service.\n"
        ),
        0o644,
    )?;
    write(&control.join("md5sums"), &md5sums(&pkg)?, 0o644)?;

    let out_dir = root.join("target/debian");
    fs::create_dir_all(&out_dir)?;
    let deb = out_dir.join(format!("mx6gate_{version}_{arch}.deb"));
    run(Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group", "-Zxz"])
        .arg(&pkg)
        .arg(&deb))?;
    Ok(deb)
}

/// The example config, turned into the packaged conffile: same notes, but
/// no interface, so an install never attaches to a NIC nobody chose (the
/// daemon refuses to start, exit 78, until one is named).
fn packaged_config(example: &str) -> Result<String> {
    const HEADER: &str =
        "# mx6gate.example.toml — annotated example of /etc/mx6gate/mx6gate.toml\n";
    const IFACES: &str = "interfaces = [\"eth0\"]\n";
    if !example.starts_with(HEADER) || example.matches(IFACES).count() != 1 {
        bail!("{EXAMPLE_CONFIG} changed its header or interfaces line; update xtask/src/deb.rs");
    }
    Ok(example
        .replacen(
            HEADER,
            "# /etc/mx6gate/mx6gate.toml — mx6gate's configuration (a conffile of the\n\
         # mx6gate package: your edits survive upgrades). Reload: systemctl reload mx6gate\n",
            1,
        )
        .replacen(
            IFACES,
            "# The package names none: the service refuses to start until you do, so\n\
         # installing never attaches the gate anywhere by surprise. For example:\n\
         #   interfaces = [\"eth0\"]\n\
         interfaces = []\n",
            1,
        ))
}

fn debian_changelog(version: &str) -> Result<String> {
    // The commit's date keeps rebuilds of one commit identical.
    let date = stdout(Command::new("git").args(["log", "-1", "--format=%aD"]))
        .unwrap_or_else(|_| "Thu, 01 Jan 2026 00:00:00 +0000".into());
    Ok(format!(
        "mx6gate ({version}) unstable; urgency=medium\n\n  \
         * Built by `cargo xtask deb` from the mx6gate repository.\n\n \
         -- mx6gate maintainers <mx6gate@example.org>  {date}\n"
    ))
}

/// `Depends:` for the binary's shared libraries, as dpkg-shlibdeps sees
/// them (it wants a debian/control to read, so it gets a minimal one).
fn shlib_depends(work: &Path, bin: &Path) -> Result<String> {
    let dir = work.join("shlibdeps");
    write(
        &dir.join("debian/control"),
        "Source: mx6gate\n\nPackage: mx6gate\nArchitecture: any\n",
        0o644,
    )?;
    let out = stdout(
        Command::new("dpkg-shlibdeps")
            .current_dir(&dir)
            .args(["-O", "-e"])
            .arg(bin),
    )?;
    out.lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .map(str::to_string)
        .with_context(|| format!("dpkg-shlibdeps printed no shlibs:Depends: {out:?}"))
}

fn md5sums(pkg: &Path) -> Result<String> {
    let mut files = Vec::new();
    walk(pkg, &mut files)?;
    files.sort();
    let mut out = String::new();
    for f in files {
        let rel = f.strip_prefix(pkg)?;
        if rel.starts_with("DEBIAN") {
            continue;
        }
        let sum = stdout(Command::new("md5sum").arg(&f))?;
        let hash = sum.split_whitespace().next().unwrap_or_default();
        out.push_str(&format!("{hash}  {}\n", rel.display()));
    }
    Ok(out)
}

fn du_kib(pkg: &Path) -> Result<u64> {
    let mut files = Vec::new();
    walk(pkg, &mut files)?;
    Ok(files
        .iter()
        .map(|f| f.metadata().map(|m| m.len().div_ceil(1024)).unwrap_or(0))
        .sum())
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

fn gzip(src: &Path, dest: &Path) -> Result<()> {
    // -n: no name or time stamp inside, so the output is reproducible.
    let data = Command::new("gzip")
        .args(["-9n", "-c"])
        .arg(src)
        .output()
        .context("running gzip")?;
    if !data.status.success() {
        bail!("gzip {} failed", src.display());
    }
    if let Some(d) = dest.parent() {
        fs::create_dir_all(d)?;
    }
    fs::write(dest, data.stdout)?;
    fs::set_permissions(dest, fs::Permissions::from_mode(0o644))?;
    Ok(())
}

fn copy(src: &Path, dest: &Path, mode: u32) -> Result<()> {
    if let Some(d) = dest.parent() {
        fs::create_dir_all(d)?;
    }
    fs::copy(src, dest)
        .with_context(|| format!("copying {} to {}", src.display(), dest.display()))?;
    fs::set_permissions(dest, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn write(dest: &Path, text: &str, mode: u32) -> Result<()> {
    if let Some(d) = dest.parent() {
        fs::create_dir_all(d)?;
    }
    fs::write(dest, text).with_context(|| format!("writing {}", dest.display()))?;
    fs::set_permissions(dest, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn stdout(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

//! Debian's stock kernel packages, fetched with apt from Debian's archive
//! through a private apt configuration (the machine's /etc/apt is read
//! for where its Debian archive is, never written), unpacked into the
//! cache with their modules indexed (`depmod`), ready to boot.
//!
//! ```text
//! <cache>/apt/<suite>/          sources.list, lists/, archives/ of that suite
//! <cache>/<release>/            the unpacked package: boot/vmlinuz-<release>,
//!                               lib/modules/<release>/ (with modules.dep)
//! ```
//!
//! Which package is "the" kernel of a suite is what its `linux-image-amd64`
//! metapackage names today: security updates move it, and the archive
//! keeps only the current one, so a pinned version would stop resolving.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use super::Kernel;
use crate::run;

/// Debian's archive key ring (package debian-archive-keyring), which also
/// holds the keys of older releases.
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// A kernel unpacked in the cache.
pub struct Unpacked {
    /// `uname -r` of the guest, e.g. 6.1.0-57-amd64.
    pub release: String,
    /// The Debian package version, e.g. 6.1.192-3.
    pub package_version: String,
    pub root: PathBuf,
}

impl Unpacked {
    pub fn vmlinuz(&self) -> PathBuf {
        self.root.join(format!("boot/vmlinuz-{}", self.release))
    }
    pub fn modules(&self) -> PathBuf {
        self.root.join(format!("lib/modules/{}", self.release))
    }
}

/// The current stock kernel of `k`'s suite, unpacked in `cache`.
/// Downloads only what the cache lacks; with the archive unreachable, the
/// newest kernel unpacked earlier for that suite is used (and said so).
pub fn kernel(k: &Kernel, cache: &Path) -> Result<Unpacked> {
    let apt = Apt::new(cache, k.suite, &Archive::of_this_machine()?)?;
    let resolved = apt.update().and_then(|()| apt.current_image());
    let (package, version) = match resolved {
        Ok(pv) => {
            fs::write(apt.dir.join("current"), format!("{} {}\n", pv.0, pv.1))?;
            pv
        }
        Err(e) => {
            let last = fs::read_to_string(apt.dir.join("current")).with_context(|| {
                format!(
                    "finding Debian {}'s kernel ({e:#}), and none is cached",
                    k.suite
                )
            })?;
            let mut w = last.split_whitespace();
            let pv = (
                w.next().unwrap_or_default().to_string(),
                w.next().unwrap_or_default().to_string(),
            );
            eprintln!(
                "xtask: could not reach Debian's archive for {} ({e:#}); using the cached {}",
                k.suite, pv.0
            );
            pv
        }
    };
    let release = package
        .strip_prefix("linux-image-")
        .with_context(|| format!("unexpected kernel package name {package}"))?
        .to_string();
    let root = cache.join(&release);
    let done = root.join(".unpacked");
    if fs::read_to_string(&done).ok().as_deref() != Some(version.as_str()) {
        let deb = apt.download(&package, &version)?;
        unpack(&deb, &root, &release)?;
        fs::write(&done, &version)?;
    }
    Ok(Unpacked {
        release,
        package_version: version,
        root,
    })
}

/// `dpkg-deb -x`, then the module index the package does not ship. Newer
/// packages put modules under usr/lib (merged /usr): a lib → usr/lib link
/// gives every kernel the same layout, the one depmod -b expects.
fn unpack(deb: &Path, root: &Path, release: &str) -> Result<()> {
    if root.exists() {
        fs::remove_dir_all(root).with_context(|| format!("removing {}", root.display()))?;
    }
    fs::create_dir_all(root)?;
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(root))?;
    if !root.join("lib").exists() && root.join("usr/lib/modules").exists() {
        std::os::unix::fs::symlink("usr/lib", root.join("lib"))?;
    }
    run(Command::new("depmod").arg("-b").arg(root).arg(release))?;
    Ok(())
}

/// Where this machine's apt gets Debian from: the archive and its
/// security archive (the same mirrors serve every release).
struct Archive {
    main: String,
    security: Option<String>,
}

impl Archive {
    /// From the machine's apt sources (deb822 `.sources` files and
    /// one-line `sources.list` entries): the URI of an entry for a plain
    /// suite (`bookworm`), and of one for a `-security` suite.
    fn of_this_machine() -> Result<Archive> {
        let mut entries: Vec<(String, String)> = Vec::new();
        let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
        if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
            let mut more: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
            more.sort();
            files.extend(more);
        }
        for f in files {
            let Ok(text) = fs::read_to_string(&f) else {
                continue;
            };
            match f.extension().and_then(|e| e.to_str()) {
                Some("sources") => entries.extend(deb822_entries(&text)),
                Some("list") => entries.extend(one_line_entries(&text)),
                _ => {}
            }
        }
        let main = entries
            .iter()
            .find(|(_, suite)| !suite.contains('-'))
            .map(|(uri, _)| uri.clone())
            .context("no Debian archive (a `deb` entry for a release) in /etc/apt's sources")?;
        let security = entries
            .iter()
            .find(|(_, suite)| suite.ends_with("-security"))
            .map(|(uri, _)| uri.clone());
        Ok(Archive { main, security })
    }
}

/// (URI, suite) of each `Types: deb` stanza.
fn deb822_entries(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .filter(|l| !l.starts_with('#'))
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        let enabled = field("Enabled:").is_none_or(|v| v != "no");
        if !enabled || !field("Types:").is_some_and(|t| t.split_whitespace().any(|t| t == "deb")) {
            continue;
        }
        if let (Some(uris), Some(suites)) = (field("URIs:"), field("Suites:")) {
            for uri in uris.split_whitespace() {
                for suite in suites.split_whitespace() {
                    out.push((uri.to_string(), suite.to_string()));
                }
            }
        }
    }
    out
}

/// (URI, suite) of each `deb [options] URI suite components` line.
fn one_line_entries(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim().strip_prefix("deb ")?;
            let l = match l.trim_start().strip_prefix('[') {
                Some(rest) => rest.split_once(']')?.1,
                None => l,
            };
            let mut w = l.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.to_string()))
        })
        .collect()
}

/// apt with a configuration of its own for one Debian suite.
struct Apt {
    dir: PathBuf,
}

impl Apt {
    fn new(cache: &Path, suite: &str, archive: &Archive) -> Result<Apt> {
        let dir = cache.join("apt").join(suite);
        for d in ["lists/partial", "archives/partial"] {
            fs::create_dir_all(dir.join(d))?;
        }
        let mut sources = format!("deb [signed-by={KEYRING}] {} {suite} main\n", archive.main);
        // Debian 11's security suite is "bullseye-security" like the later
        // ones (the "/updates" naming ended with Debian 10).
        if let Some(sec) = &archive.security {
            sources += &format!("deb [signed-by={KEYRING}] {sec} {suite}-security main\n");
        }
        fs::write(dir.join("sources.list"), sources)?;
        Ok(Apt { dir })
    }

    /// Options that make apt read and write only under `dir`: sources,
    /// package lists, downloads; no dpkg status (nothing is installed), no
    /// translations or AppStream data (only Packages is needed).
    fn options(&self) -> Vec<String> {
        let d = self.dir.display();
        [
            format!("Dir::Etc::sourcelist={d}/sources.list"),
            "Dir::Etc::sourceparts=-".into(),
            format!("Dir::State::Lists={d}/lists"),
            format!("Dir::Cache::archives={d}/archives"),
            format!("Dir::Cache::pkgcache={d}/pkgcache.bin"),
            format!("Dir::Cache::srcpkgcache={d}/srcpkgcache.bin"),
            "Dir::State::status=/dev/null".into(),
            "APT::Architectures=amd64".into(),
            "Acquire::Languages=none".into(),
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false".into(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_string(), o])
        .collect()
    }

    fn apt(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        c.args(self.options());
        c
    }

    fn update(&self) -> Result<()> {
        let out = self
            .apt("apt-get")
            .args(["-qq", "update"])
            .output()
            .context("running apt-get update")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        // apt-get update exits 0 when a source fails to download; its
        // warnings say so.
        if !out.status.success() || stderr.contains("Failed to fetch") {
            bail!("apt-get update: {}", stderr.trim());
        }
        Ok(())
    }

    /// (package, version) of the kernel image `linux-image-amd64` depends on.
    fn current_image(&self) -> Result<(String, String)> {
        let out = self
            .apt("apt-cache")
            .args(["show", "--no-all-versions", "linux-image-amd64"])
            .output()
            .context("running apt-cache show")?;
        if !out.status.success() {
            bail!(
                "apt-cache show linux-image-amd64: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let depends = text
            .lines()
            .find_map(|l| l.strip_prefix("Depends: "))
            .context("linux-image-amd64 has no Depends")?;
        let package = depends
            .split(',')
            .map(|d| d.split_whitespace().next().unwrap_or(""))
            .find(|p| p.starts_with("linux-image-") && !p.contains("unsigned"))
            .with_context(|| format!("no kernel image among {depends:?}"))?
            .to_string();
        let out = self
            .apt("apt-cache")
            .args(["show", "--no-all-versions", &package])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let version = text
            .lines()
            .find_map(|l| l.strip_prefix("Version: "))
            .with_context(|| format!("no version for {package}"))?
            .trim()
            .to_string();
        Ok((package, version))
    }

    /// The .deb of `package` at `version`, from the archive unless cached.
    fn download(&self, package: &str, version: &str) -> Result<PathBuf> {
        let archives = self.dir.join("archives");
        // apt-get download writes to the working directory; apt's own
        // sandbox user cannot write into a root-only cache, which it
        // only warns about.
        let file = archives.join(format!(
            "{package}_{}_amd64.deb",
            version.replace(':', "%3a")
        ));
        if !file.exists() {
            let out = self
                .apt("apt-get")
                .current_dir(&archives)
                .args(["-qq", "-o", "APT::Sandbox::User=root", "download"])
                .arg(format!("{package}={version}"))
                .output()
                .context("running apt-get download")?;
            if !out.status.success() || !file.exists() {
                bail!(
                    "apt-get download {package}={version}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        // Older kernels of the suite are of no more use.
        for e in fs::read_dir(&archives)?.flatten() {
            let p = e.path();
            if p != file && p.extension().is_some_and(|x| x == "deb") {
                fs::remove_file(p).ok();
            }
        }
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apt_sources_both_formats() {
        let deb822 = "Types: deb\n# a comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n\
                      Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\n\
                      Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n";
        assert_eq!(
            deb822_entries(deb822),
            [
                ("http://mirror.example/debian", "bookworm"),
                ("http://mirror.example/debian", "bookworm-updates"),
                ("http://mirror.example/debian-security", "bookworm-security"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        let list = "# deb http://old.example/debian buster main\n\
                    deb [signed-by=/k.gpg] http://mirror.example/debian bookworm main\n\
                    deb-src http://mirror.example/debian bookworm main\n";
        assert_eq!(
            one_line_entries(list),
            [(
                "http://mirror.example/debian".to_string(),
                "bookworm".to_string()
            )]
        );
    }
}

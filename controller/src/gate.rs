//! The pinned state of one gate: load the embedded object, adopt what an
//! earlier controller pinned, attach XDP, detach. Owns the bpffs layout:
//!
//! ```text
//! <pin_path>/maps/<MAP>         every map in mx6gate_common::map_names::ALL
//! <pin_path>/progs/xdp          the XDP program now attached
//! <pin_path>/progs/sk_lookup    the sk_lookup program now attached
//! <pin_path>/links/xdp@<iface>  one bpf_link per protected interface
//! <pin_path>/links/sk_lookup    the gateway network namespace's link
//! ```
//!
//! Links hold the programs, so the gate keeps working with no controller
//! running (invariant 4); an upgrade swaps programs under the pinned links
//! with BPF_LINK_UPDATE, never detaching (no window without policy).
//!
//! While a controller runs it keeps its own descriptors on the links (and
//! on the maps and programs): pins removed by hand then do not end
//! enforcement, and [`Gate::check_pins`] / [`Gate::repair_pins`] notice
//! and pin the same objects again.
use std::{
    collections::BTreeMap,
    fs,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, Context, Result};
use aya::{
    maps::MapInfo,
    programs::{
        links::{FdLink, PinnedLink},
        ProgramInfo, SkLookup, Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use mx6gate_common::{map_names, SK_LOOKUP_PROGRAM, XDP_PROGRAM};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::{
    config::{Config, XdpAttach},
    kernel,
};

/// The eBPF object, built by `cargo xtask build` and embedded at compile time.
pub static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("MX6GATE_BPF_OBJ"));

const LINK_PREFIX: &str = "xdp@";

#[derive(Clone, Debug)]
pub struct PinLayout {
    pub root: PathBuf,
}

impl PinLayout {
    pub fn new(root: &Path) -> PinLayout {
        PinLayout {
            root: root.to_path_buf(),
        }
    }
    pub fn maps(&self) -> PathBuf {
        self.root.join("maps")
    }
    pub fn map(&self, name: &str) -> PathBuf {
        self.maps().join(name)
    }
    pub fn progs(&self) -> PathBuf {
        self.root.join("progs")
    }
    pub fn xdp_prog(&self) -> PathBuf {
        self.progs().join("xdp")
    }
    pub fn sk_lookup_prog(&self) -> PathBuf {
        self.progs().join("sk_lookup")
    }
    pub fn sk_lookup_link(&self) -> PathBuf {
        self.links().join("sk_lookup")
    }
    pub fn links(&self) -> PathBuf {
        self.root.join("links")
    }
    pub fn xdp_link(&self, iface: &str) -> PathBuf {
        self.links().join(format!("{LINK_PREFIX}{iface}"))
    }
    /// Whether a gate is loaded here (its maps are pinned).
    pub fn is_loaded(&self) -> bool {
        self.map(map_names::CONFIG).exists()
    }
    /// Interfaces that have a pinned XDP link.
    pub fn attached_interfaces(&self) -> Vec<String> {
        let Ok(dir) = fs::read_dir(self.links()) else {
            return Vec::new();
        };
        let mut v: Vec<String> = dir
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .filter(|n| n.starts_with(LINK_PREFIX))
                    .and_then(|n| n.strip_prefix(LINK_PREFIX))
                    .map(str::to_string)
            })
            .collect();
        v.sort();
        v
    }
}

/// How each interface got attached, recorded in the state dir because a
/// bpf_link does not report native vs generic.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct AttachRecord {
    #[serde(default)]
    pub interfaces: BTreeMap<String, AttachedIface>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AttachedIface {
    /// "native" or "generic".
    pub mode: String,
    pub ifindex: u32,
}

impl AttachRecord {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("attached.toml")
    }
    pub fn load(state_dir: &Path) -> AttachRecord {
        crate::state::read_state_file(&Self::path(state_dir))
            .ok()
            .flatten()
            .and_then(|s| toml::from_str(&s).ok())
            .unwrap_or_default()
    }
    pub fn save(&self, state_dir: &Path) -> Result<()> {
        crate::fsutil::write_atomic(&Self::path(state_dir), toml::to_string(self)?.as_bytes())
    }
}

/// bpffs must be mounted at the pin path's file system; mount the standard
/// one if nothing is there (minimal hosts and fresh namespaces lack it).
pub fn ensure_bpffs(pin_path: &Path) -> Result<()> {
    let bpffs = Path::new("/sys/fs/bpf");
    if pin_path.starts_with(bpffs) && !is_bpffs(bpffs).unwrap_or(false) {
        fs::create_dir_all(bpffs).ok();
        let src = std::ffi::CString::new("bpf").unwrap();
        let dst = std::ffi::CString::new("/sys/fs/bpf").unwrap();
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                dst.as_ptr(),
                src.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            bail!(
                "mounting bpffs on /sys/fs/bpf: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    let parent = pin_path
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    if !is_bpffs(parent).unwrap_or(false) {
        // Suggesting `mount -t bpf bpf <parent>` would mount over /tmp or
        // /: point at the standard bpffs instead.
        bail!(
            "pin_path {}: {} is not on a bpf file system, and pins can only live on one; put pin_path under {bpffs} (e.g. {})",
            pin_path.display(),
            parent.display(),
            crate::config::DEFAULT_PIN_PATH,
            bpffs = bpffs.display(),
        );
    }
    Ok(())
}

/// Whether `p` is on a bpf file system (where pins can live).
pub fn is_bpffs(p: &Path) -> std::io::Result<bool> {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a struct statfs to fill.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

/// A loaded gate: the object with its maps opened from (or created at) their
/// pins, and the XDP program attached through pinned links.
pub struct Gate {
    pub layout: PinLayout,
    pub ebpf: Ebpf,
    /// True when the maps existed before this load (an earlier controller's).
    pub adopted: bool,
    /// This process's descriptors on the XDP links it attached or adopted,
    /// by interface, and on the sk_lookup link: the pins hold them too,
    /// but these keep them alive (and re-pinnable) if a pin is removed.
    xdp_links: BTreeMap<String, FdLink>,
    sk_link: Option<FdLink>,
    /// The kernel ids of the maps this gate uses, to tell our pins from
    /// someone else's.
    map_ids: BTreeMap<&'static str, u32>,
    /// The kernel's optional features this load chose.
    pub features: kernel::Optional,
}

/// What [`Gate::check_pins`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PinCheck {
    /// Pins of this gate's objects that are gone (removed by hand…).
    pub missing: Vec<PathBuf>,
    /// Pins that now hold other objects than this gate's (another gate
    /// pinned at the same path).
    pub foreign: Vec<PathBuf>,
}

impl PinCheck {
    pub fn is_ok(&self) -> bool {
        self.missing.is_empty() && self.foreign.is_empty()
    }
}

impl Gate {
    /// Load the embedded object against the pins under `cfg.pin_path`,
    /// creating what is missing and adopting what is there. Does not attach.
    pub fn load(cfg: &Config) -> Result<Gate> {
        // A kernel below the floor is told so in plain words, before
        // anything is created, rather than by a verifier log.
        kernel::check_requirements()?;
        Gate::load_with(cfg, kernel::Optional::probe())
    }

    /// [`Gate::load`] with the optional features given rather than probed
    /// (the bench compares the variants on one kernel). Features the
    /// kernel lacks make the verifier refuse the load.
    pub fn load_with(cfg: &Config, features: kernel::Optional) -> Result<Gate> {
        let layout = PinLayout::new(&cfg.pin_path);
        ensure_bpffs(&layout.root)?;
        for d in [layout.maps(), layout.progs(), layout.links()] {
            fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        let adopted = layout.is_loaded();
        if adopted {
            check_pinned_layout(&layout)?;
        }
        // Maps a gate pinned by an earlier release lacks: this load
        // creates them (the upgrade path), and takes them away again if it
        // fails, so a refused upgrade leaves the old gate as it was.
        let created_now: Vec<PathBuf> = map_names::ADDED_LATER
            .iter()
            .map(|n| layout.map(n))
            .filter(|p| adopted && !p.exists())
            .collect();
        let paths: Vec<(&str, PathBuf)> =
            map_names::ALL.iter().map(|n| (*n, layout.map(n))).collect();
        let loaded = load_programs(cfg, &features, &paths);
        let ebpf = match loaded {
            Ok(ebpf) => ebpf,
            Err(e) => {
                // Leave no half-made gate behind; an adopted one stays as it was.
                if !adopted {
                    for (_, path) in &paths {
                        fs::remove_file(path).ok();
                    }
                }
                for path in &created_now {
                    fs::remove_file(path).ok();
                }
                return Err(e);
            }
        };
        for path in &created_now {
            info!(
                map = %path.display(),
                "the pinned gate predates this map: created it (upgrade)"
            );
        }
        // A gate from before the /32 table: its entries move from the
        // old SLASH32 hash into the new table now, before this load's
        // programs replace the running ones (their links are updated
        // later, by `attach`), so the allowlist never looks empty.
        let legacy = layout.map(map_names::SLASH32);
        if created_now.contains(&layout.map(map_names::SLASH32_TABLE)) && legacy.exists() {
            let moved = crate::allowlist::adopt_legacy_slash32(&cfg.pin_path, &legacy);
            let n = match moved {
                Ok(n) => n,
                Err(e) => {
                    for path in &created_now {
                        fs::remove_file(path).ok();
                    }
                    return Err(e);
                }
            };
            // The old programs hold their own reference to the old map;
            // the pin goes so that nothing reads it again.
            fs::remove_file(&legacy).with_context(|| format!("removing {}", legacy.display()))?;
            info!(
                entries = n,
                "moved the /32 level from the SLASH32 hash into SLASH32_TABLE (upgrade)"
            );
        }
        let mut map_ids: BTreeMap<&'static str, u32> = BTreeMap::new();
        for name in map_names::ALL.iter().copied() {
            let info = MapInfo::from_pin(layout.map(name))
                .with_context(|| format!("reading pinned map {}", layout.map(name).display()))?;
            map_ids.insert(name, info.id());
        }
        Ok(Gate {
            layout,
            ebpf,
            adopted,
            xdp_links: BTreeMap::new(),
            sk_link: None,
            map_ids,
            features,
        })
    }

    /// Whether every pin of this gate is in place and holds this gate's
    /// object: its maps, its programs, the XDP links of the interfaces it
    /// attached and the sk_lookup link. A few stat/open calls.
    pub fn check_pins(&mut self) -> PinCheck {
        let mut check = PinCheck::default();
        let mut judge = |path: PathBuf, found: Option<u32>, ours: Option<u32>| match found {
            None => check.missing.push(path),
            Some(id) if Some(id) != ours => check.foreign.push(path),
            Some(_) => {}
        };
        for (name, id) in &self.map_ids {
            let path = self.layout.map(name);
            judge(
                path.clone(),
                MapInfo::from_pin(&path).ok().map(|i| i.id()),
                Some(*id),
            );
        }
        let progs = [
            (self.layout.xdp_prog(), XDP_PROGRAM),
            (self.layout.sk_lookup_prog(), SK_LOOKUP_PROGRAM),
        ];
        for (path, name) in progs {
            let ours = self
                .ebpf
                .program(name)
                .and_then(|p| p.info().ok())
                .map(|i| i.id());
            let found = ProgramInfo::from_pin(&path).ok().map(|i| i.id());
            judge(path, found, ours);
        }
        let mut links: Vec<(PathBuf, Option<u32>)> = self
            .xdp_links
            .iter()
            .map(|(iface, l)| (self.layout.xdp_link(iface), l.info().ok().map(|i| i.id())))
            .collect();
        if let Some(l) = &self.sk_link {
            links.push((self.layout.sk_lookup_link(), l.info().ok().map(|i| i.id())));
        }
        for (path, ours) in links {
            let found = PinnedLink::from_pin(&path)
                .ok()
                .map(FdLink::from)
                .and_then(|l| l.info().ok())
                .map(|i| i.id());
            judge(path, found, ours);
        }
        check
    }

    /// Pin again what [`Gate::check_pins`] found missing, from this
    /// process's descriptors (the same objects: no window, nothing
    /// re-attached). Returns the paths pinned.
    pub fn repair_pins(&mut self, missing: &[PathBuf]) -> Result<Vec<PathBuf>> {
        for d in [self.layout.maps(), self.layout.progs(), self.layout.links()] {
            fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        let mut pinned = Vec::new();
        for path in missing {
            let pin = |what: &str, r: std::result::Result<(), aya::pin::PinError>| {
                r.with_context(|| format!("pinning {what} at {}", path.display()))
            };
            if let Some(name) = self
                .map_ids
                .keys()
                .find(|n| self.layout.map(n) == *path)
                .copied()
            {
                let map = self.ebpf.map(name).expect("loaded with the object");
                pin(name, map.pin(path))?;
            } else if *path == self.layout.xdp_prog() {
                let prog = self.xdp()?;
                pin(XDP_PROGRAM, prog.pin(path))?;
            } else if *path == self.layout.sk_lookup_prog() {
                let prog: &mut SkLookup = self
                    .ebpf
                    .program_mut(SK_LOOKUP_PROGRAM)
                    .expect("checked at load")
                    .try_into()?;
                pin(SK_LOOKUP_PROGRAM, prog.pin(path))?;
            } else if *path == self.layout.sk_lookup_link() {
                if let Some(l) = self.sk_link.take() {
                    self.sk_link = Some(repin_link(l, path)?);
                }
            } else if let Some(iface) = self
                .xdp_links
                .keys()
                .find(|i| self.layout.xdp_link(i) == *path)
                .cloned()
            {
                let l = self.xdp_links.remove(&iface).expect("found above");
                self.xdp_links.insert(iface, repin_link(l, path)?);
            } else {
                continue;
            }
            pinned.push(path.clone());
        }
        Ok(pinned)
    }

    /// Whether this kernel's verifier accepts both programs as `load`
    /// would load them here, without pinning or attaching anything (the
    /// maps are made for the check and gone with it). For `doctor`.
    pub fn verify(cfg: &Config) -> Result<kernel::Optional> {
        kernel::check_requirements()?;
        let features = kernel::Optional::probe();
        load_programs(cfg, &features, &[])?;
        Ok(features)
    }

    fn xdp(&mut self) -> Result<&mut Xdp> {
        Ok(self
            .ebpf
            .program_mut(XDP_PROGRAM)
            .expect("checked at load")
            .try_into()?)
    }

    /// Swap this gate's program into a pinned link (BPF_LINK_UPDATE): the
    /// interface is never without a program. Returns our handle on it.
    fn adopt_link(&mut self, pin: &Path) -> Result<FdLink> {
        let link = PinnedLink::from_pin(pin)
            .with_context(|| format!("opening pinned link {}", pin.display()))?;
        let fd_link: FdLink = link.into();
        let xdp_link = fd_link
            .try_into()
            .context("pinned link is not an XDP link")?;
        let prog = self.xdp()?;
        let id = prog.attach_to_link(xdp_link)?;
        prog.take_link(id)?
            .try_into()
            .map_err(|_| anyhow!("{}: not a bpf_link", pin.display()))
    }

    /// Attach sk_lookup to the network namespace this process is in (the
    /// gateway's), or swap the new program into the pinned link.
    pub fn attach_sk_lookup(&mut self) -> Result<()> {
        let layout = self.layout.clone();
        let pin = layout.sk_lookup_link();
        let prog: &mut SkLookup = self
            .ebpf
            .program_mut(SK_LOOKUP_PROGRAM)
            .expect("checked at load")
            .try_into()?;
        let mut adopted = false;
        if pin.exists() {
            match link_update(&pin, prog.fd()?.as_fd()) {
                Ok(()) => {
                    adopted = true;
                    self.sk_link = PinnedLink::from_pin(&pin).ok().map(FdLink::from);
                }
                Err(e) => {
                    warn!(
                        error = format!("{e:#}"),
                        "pinned sk_lookup link is unusable; attaching afresh"
                    );
                    fs::remove_file(&pin).ok();
                }
            }
        }
        if !adopted {
            let netns =
                fs::File::open("/proc/self/ns/net").context("opening this network namespace")?;
            let id = prog
                .attach(netns)
                .context("attaching sk_lookup to the network namespace")?;
            let link: FdLink = prog.take_link(id)?.into();
            let pinned = link
                .pin(&pin)
                .with_context(|| format!("pinning {}", pin.display()))?;
            self.sk_link = Some(pinned.into());
            info!("sk_lookup attached to the gateway's network namespace");
        } else {
            info!("adopted pinned sk_lookup link, program updated in place");
        }
        let prog_pin = layout.sk_lookup_prog();
        fs::remove_file(&prog_pin).ok();
        prog.pin(&prog_pin)
            .with_context(|| format!("pinning {}", prog_pin.display()))?;
        Ok(())
    }

    /// Attach to exactly `ifaces`: interfaces already linked get the new
    /// program swapped in atomically, new ones are attached and pinned,
    /// pinned ones no longer wanted are detached. Returns the attach record.
    pub fn attach(
        &mut self,
        ifaces: &[String],
        mode: XdpAttach,
        state_dir: &Path,
    ) -> Result<AttachRecord> {
        for iface in ifaces {
            if ifindex(iface).is_none() {
                bail!("interface {iface:?} does not exist");
            }
        }
        let mut record = AttachRecord::load(state_dir);
        let layout = self.layout.clone();
        for iface in ifaces {
            let pin = layout.xdp_link(iface);
            let idx = ifindex(iface).unwrap();
            if pin.exists() {
                match self.adopt_link(&pin) {
                    Ok(handle) => {
                        self.xdp_links.insert(iface.clone(), handle);
                        record
                            .interfaces
                            .entry(iface.clone())
                            .or_insert_with(|| AttachedIface {
                                mode: "unknown".into(),
                                ifindex: idx,
                            });
                        info!(iface, "adopted pinned XDP link, program updated in place");
                        continue;
                    }
                    // A link whose interface went away is defunct
                    // (ENOLINK); nothing is attached through it any more.
                    Err(e) => {
                        warn!(
                            iface,
                            error = format!("{e:#}"),
                            "pinned XDP link is unusable; attaching afresh"
                        );
                        fs::remove_file(&pin).ok();
                    }
                }
            }
            let (id, how) = {
                let prog = self.xdp()?;
                match mode {
                    XdpAttach::Native => (
                        prog.attach(iface, XdpMode::Driver)
                            .with_context(|| format!("attaching XDP to {iface} in native mode"))?,
                        "native",
                    ),
                    XdpAttach::Generic => (
                        prog.attach(iface, XdpMode::Skb)
                            .with_context(|| format!("attaching XDP to {iface} in generic mode"))?,
                        "generic",
                    ),
                    XdpAttach::Auto => match prog.attach(iface, XdpMode::Driver) {
                        Ok(id) => (id, "native"),
                        Err(e) => {
                            warn!(iface, error = %e, "native XDP unavailable, falling back to generic (slower: runs after the skb is built)");
                            (
                                prog.attach(iface, XdpMode::Skb).with_context(|| {
                                    format!("attaching XDP to {iface} in generic mode")
                                })?,
                                "generic",
                            )
                        }
                    },
                }
            };
            let link = self.xdp()?.take_link(id)?;
            let fd_link: FdLink = link.try_into().map_err(|_| {
                anyhow!("{iface}: the kernel attached XDP without a bpf_link; cannot pin it")
            })?;
            let pinned = fd_link
                .pin(&pin)
                .with_context(|| format!("pinning {}", pin.display()))?;
            self.xdp_links.insert(iface.clone(), pinned.into());
            record.interfaces.insert(
                iface.clone(),
                AttachedIface {
                    mode: how.to_string(),
                    ifindex: idx,
                },
            );
            info!(iface, mode = how, "XDP attached");
        }
        // Ours: dropping a handle whose pin goes next detaches it.
        self.xdp_links.retain(|i, _| ifaces.contains(i));
        for old in layout.attached_interfaces() {
            if !ifaces.contains(&old) {
                fs::remove_file(layout.xdp_link(&old)).ok();
                record.interfaces.remove(&old);
                info!(iface = old, "XDP detached (no longer configured)");
            }
        }
        record.interfaces.retain(|k, _| ifaces.contains(k));
        record.save(state_dir)?;
        // The program pin is for inspection (bpftool prog show pinned …);
        // the links are what keep it running.
        let prog_pin = layout.xdp_prog();
        fs::remove_file(&prog_pin).ok();
        self.xdp()?
            .pin(&prog_pin)
            .with_context(|| format!("pinning {}", prog_pin.display()))?;
        Ok(record)
    }
}

/// Pin `link` at `path` again; our handle on it back.
fn repin_link(link: FdLink, path: &Path) -> Result<FdLink> {
    Ok(link
        .pin(path)
        .with_context(|| format!("pinning {}", path.display()))?
        .into())
}

/// The object with `features`' load-time constants, its maps at `pins`
/// (name → pin path; none: unpinned), both programs through the verifier.
fn load_programs(
    cfg: &Config,
    features: &kernel::Optional,
    pins: &[(&str, PathBuf)],
) -> Result<Ebpf> {
    let consts = features.load_consts();
    let mut loader = EbpfLoader::new();
    for (name, path) in pins {
        loader.map_pin_path(name, path.as_path());
    }
    for (name, value) in &consts {
        loader.override_global(name, value, true);
    }
    loader
        .map_max_entries(map_names::ALLOW, cfg.maps.allow_entries)
        .map_max_entries(
            map_names::SLASH32_TABLE,
            mx6gate_common::allow::table_entries(cfg.maps.allow_entries),
        )
        .map_max_entries(map_names::LONG_PREFIXES, cfg.maps.allow_entries)
        .map_max_entries(map_names::PARTNER_HITS, cfg.maps.max_partners)
        .map_max_entries(map_names::EXPLAINED, cfg.maps.explained_entries);
    let mut ebpf = loader.load(BPF_OBJECT).context("loading the eBPF object")?;
    let prog: &mut Xdp = ebpf
        .program_mut(XDP_PROGRAM)
        .ok_or_else(|| anyhow!("the eBPF object has no program {XDP_PROGRAM}"))?
        .try_into()?;
    prog.load().context("loading the XDP program (verifier)")?;
    let sk: &mut SkLookup = ebpf
        .program_mut(SK_LOOKUP_PROGRAM)
        .ok_or_else(|| anyhow!("the eBPF object has no program {SK_LOOKUP_PROGRAM}"))?
        .try_into()?;
    sk.load()
        .context("loading the sk_lookup program (verifier)")?;
    Ok(ebpf)
}

/// Key and value sizes of each map as this build defines them. Pinned
/// maps from a build with another layout cannot be adopted; say so plainly
/// instead of failing deep in the loader or the verifier.
fn expected_layout() -> [(&'static str, usize, usize); 13] {
    use std::mem::size_of;

    use mx6gate_common::{
        allow::{LongKey, Slash32, Slot},
        explain::{DeferConfig, Explained},
        AllowKey, GateConfig,
    };
    [
        (map_names::ALLOW, size_of::<AllowKey>(), 4),
        (map_names::CONFIG, 4, size_of::<GateConfig>()),
        (map_names::COUNTERS, 4, 8),
        (map_names::PARTNER_HITS, 4, 8),
        (map_names::RESPONDER, 4, 4),
        (map_names::SLASH32_TABLE, 4, size_of::<Slot>()),
        // Only in gates pinned before the table (see `Gate::load`).
        (map_names::SLASH32, 4, size_of::<Slash32>()),
        (map_names::LONG_PREFIXES, size_of::<LongKey>(), 4),
        // A ring buffer has neither keys nor values.
        (map_names::REPORTS, 0, 0),
        (map_names::OCCUPIED, 4, 8),
        (map_names::EXPLAINED, 16, size_of::<Explained>()),
        (map_names::DEFER, 4, size_of::<DeferConfig>()),
        (map_names::COUNTERS_EXT, 4, 8),
    ]
}

fn check_pinned_layout(layout: &PinLayout) -> Result<()> {
    for (name, key, value) in expected_layout() {
        let path = layout.map(name);
        // Added after the first release: a gate pinned before them gets
        // them created by this load (see `Gate::load`).
        if (map_names::ADDED_LATER.contains(&name) || name == map_names::SLASH32) && !path.exists()
        {
            continue;
        }
        let info = aya::maps::MapInfo::from_pin(&path).map_err(|e| {
            anyhow!(
                "the pinned gate at {} lacks map {name} ({e}); it was made by another mx6gate version: run `mx6gate detach`, then start again",
                layout.root.display()
            )
        })?;
        if info.key_size() as usize != key || info.value_size() as usize != value {
            bail!(
                "the pinned gate at {} was made by an incompatible mx6gate version (map {name}: key/value {}/{} bytes, this build needs {key}/{value}): run `mx6gate detach`, then start again",
                layout.root.display(),
                info.key_size(),
                info.value_size()
            );
        }
    }
    Ok(())
}

/// Remove the gate: links first (that detaches XDP at once), then programs
/// and maps. Returns what was removed, for the operator.
pub fn detach(pin_path: &Path, state_dir: &Path) -> Result<Vec<String>> {
    let layout = PinLayout::new(pin_path);
    let mut removed = Vec::new();
    for sub in [layout.links(), layout.progs(), layout.maps()] {
        if let Ok(dir) = fs::read_dir(&sub) {
            for e in dir.flatten() {
                fs::remove_file(e.path())
                    .with_context(|| format!("removing {}", e.path().display()))?;
                removed.push(e.path().display().to_string());
            }
        }
        fs::remove_dir(&sub).ok();
    }
    if layout.root.exists() {
        fs::remove_dir(&layout.root)
            .with_context(|| format!("removing {}", layout.root.display()))?;
    }
    fs::remove_file(AttachRecord::path(state_dir)).ok();
    // The allowlist snapshot described maps that no longer exist.
    fs::remove_file(state_dir.join("allowlist.snap")).ok();
    Ok(removed)
}

/// BPF_LINK_UPDATE on a pinned link: the kernel swaps the program under
/// the link atomically (aya 0.14 offers this for XDP links only).
fn link_update(pin: &Path, new_prog: std::os::fd::BorrowedFd<'_>) -> Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_LINK_UPDATE: libc::c_long = 29;
    let bpf = |cmd: libc::c_long, attr: &mut [u32; 32]| unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr) as u32,
        )
    };
    let path = std::ffi::CString::new(pin.as_os_str().as_encoded_bytes())?;
    // union bpf_attr { struct { u64 pathname; u32 bpf_fd, file_flags; } obj; }
    let mut attr = [0u32; 32];
    let ptr = path.as_ptr() as u64;
    attr[0] = ptr as u32;
    attr[1] = (ptr >> 32) as u32;
    let fd = bpf(BPF_OBJ_GET, &mut attr);
    if fd < 0 {
        bail!(
            "opening {}: {}",
            pin.display(),
            std::io::Error::last_os_error()
        );
    }
    let link = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // struct { u32 link_fd, new_prog_fd, flags, old_prog_fd; } link_update;
    let mut attr = [0u32; 32];
    attr[0] = link.as_raw_fd() as u32;
    attr[1] = new_prog.as_raw_fd() as u32;
    if bpf(BPF_LINK_UPDATE, &mut attr) < 0 {
        bail!(
            "BPF_LINK_UPDATE on {}: {}",
            pin.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

pub fn ifindex(iface: &str) -> Option<u32> {
    let c = std::ffi::CString::new(iface).ok()?;
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => None,
        i => Some(i),
    }
}

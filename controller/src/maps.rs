//! Typed access to the pinned maps, for the daemon and for CLI commands that
//! run while (or without) a daemon: both open the same pins.
use std::path::Path;

use anyhow::{bail, Context, Result};
use aya::maps::{
    lpm_trie::LpmTrie, Array, HashMap, Map, MapData, MapInfo, PerCpuArray, PerCpuValues, SockMap,
};
use mx6gate_common::{
    allow::{
        table_entries, table_shape, LongKey, Slot, TableHeader, OCCUPIED_ENTRIES, OCCUPIED_WORDS,
        SUMMARY_SHIFT,
    },
    counter_slot,
    explain::{DeferConfig, Explained},
    map_names, Counter, GateConfig, PartnerId,
};

use crate::gate::PinLayout;

pub struct GateMaps {
    /// The allowlist's maps; `crate::allowlist` owns their layout. The /32
    /// table is mapped into this process (see `Table`).
    pub table: Table,
    pub long: HashMap<MapData, LongKey, PartnerId>,
    pub allow: LpmTrie<MapData, [u8; 16], PartnerId>,
    /// Level 0, mapped into this process (see `Occupied`).
    pub occupied: Occupied,
    pub config: Array<MapData, GateConfig>,
    pub counters: PerCpuArray<MapData, u64>,
    pub partner_hits: PerCpuArray<MapData, u64>,
    pub responder: SockMap<MapData>,
    /// Defer mode's explain-then-reset (see `crate::explain`). None for a
    /// gate pinned before they existed, until a daemon adopts (upgrades) it.
    pub explain: Option<ExplainMaps>,
    /// max_entries of ALLOW and PARTNER_HITS as created (may differ from
    /// the config if the maps were adopted from before a config change).
    pub allow_capacity: u32,
    pub partner_capacity: u32,
    /// Kernel ids of CONFIG and the allowlist's maps (see `ids`).
    ids: [u32; GateMaps::ID_COUNT],
}

/// The maps added for explain-then-reset.
pub struct ExplainMaps {
    pub defer: Array<MapData, DeferConfig>,
    pub explained: HashMap<MapData, [u8; 16], Explained>,
    pub counters_ext: PerCpuArray<MapData, u64>,
    pub explained_capacity: u32,
}

fn open(layout: &PinLayout, name: &str) -> Result<Map> {
    let path = layout.map(name);
    let data = MapData::from_pin(&path)
        .with_context(|| format!("opening pinned map {}", path.display()))?;
    Ok(Map::from_map_data(data)?)
}

impl GateMaps {
    pub const ID_COUNT: usize = 5;

    /// The kernel ids of CONFIG, SLASH32_TABLE, LONG_PREFIXES, ALLOW and
    /// OCCUPIED as opened: which maps these are (ids are unique within a
    /// boot, and never reused while a map exists).
    pub fn ids(&self) -> [u32; Self::ID_COUNT] {
        self.ids
    }

    /// Open the maps a loaded gate pinned under `pin_path`.
    pub fn open(pin_path: &Path) -> Result<GateMaps> {
        let l = PinLayout::new(pin_path);
        // A gate the previous release pinned has the SLASH32 hash and no
        // table until a daemon of this release loads over it (`Gate::load`
        // upgrades it in place): say that, not "no such file".
        if !l.map(map_names::SLASH32_TABLE).exists() && l.map(map_names::SLASH32).exists() {
            bail!(
                "the gate at {} was pinned by an earlier mx6gate (its /32 level is the SLASH32 hash): restart the daemon (`systemctl restart mx6gate`) and it upgrades the gate in place, keeping the policy; nothing was changed",
                pin_path.display()
            );
        }
        let mut ids = [0u32; Self::ID_COUNT];
        for (i, name) in [
            map_names::CONFIG,
            map_names::SLASH32_TABLE,
            map_names::LONG_PREFIXES,
            map_names::ALLOW,
            map_names::OCCUPIED,
        ]
        .into_iter()
        .enumerate()
        {
            ids[i] = MapInfo::from_pin(l.map(name))
                .with_context(|| format!("opening pinned map {}", l.map(name).display()))?
                .id();
        }
        let allow_capacity = MapInfo::from_pin(l.map(map_names::ALLOW))?.max_entries();
        Ok(GateMaps {
            ids,
            table: Table::open(&l, allow_capacity)?,
            long: open(&l, map_names::LONG_PREFIXES)?.try_into()?,
            allow: open(&l, map_names::ALLOW)?.try_into()?,
            occupied: Occupied::open(&l)?,
            config: open(&l, map_names::CONFIG)?.try_into()?,
            counters: open(&l, map_names::COUNTERS)?.try_into()?,
            partner_hits: open(&l, map_names::PARTNER_HITS)?.try_into()?,
            responder: open(&l, map_names::RESPONDER)?.try_into()?,
            explain: ExplainMaps::open(&l)?,
            allow_capacity,
            partner_capacity: MapInfo::from_pin(l.map(map_names::PARTNER_HITS))?.max_entries(),
        })
    }

    /// Open them if a gate is loaded there, None if not.
    pub fn open_if_loaded(pin_path: &Path) -> Result<Option<GateMaps>> {
        if !PinLayout::new(pin_path).is_loaded() {
            return Ok(None);
        }
        Self::open(pin_path).map(Some)
    }

    pub fn read_config(&self) -> Result<GateConfig> {
        Ok(self.config.get(&0, 0)?)
    }

    pub fn write_config(&mut self, cfg: &GateConfig) -> Result<()> {
        self.config
            .set(0, *cfg, 0)
            .context("writing the CONFIG map")
    }

    /// The DEFER entry (zero for a gate without the map).
    pub fn read_defer(&self) -> Result<DeferConfig> {
        match &self.explain {
            Some(x) => Ok(x.defer.get(&0, 0)?),
            None => Ok(DeferConfig::default()),
        }
    }

    /// Write the DEFER entry; false if the gate predates the map (a
    /// daemon's next start creates it).
    pub fn write_defer(&mut self, d: &DeferConfig) -> Result<bool> {
        match &mut self.explain {
            Some(x) => {
                x.defer.set(0, *d, 0).context("writing the DEFER map")?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The explanation record of `key` (see `DeferConfig::key`), if any.
    pub fn explained(&self, key: &[u8; 16]) -> Result<Option<Explained>> {
        let Some(x) = &self.explain else {
            return Ok(None);
        };
        match x.explained.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e).context("reading the EXPLAINED map"),
        }
    }

    /// Put the responder's listening socket where sk_lookup assigns from.
    /// The kernel drops it from the map by itself when the socket closes
    /// (the responder died), which is how "responder down" is detected.
    pub fn register_responder(&mut self, listener: &impl std::os::fd::AsRawFd) -> Result<()> {
        self.responder
            .set(0, listener, 0)
            .context("registering the responder socket in the RESPONDER sockmap")
    }

    /// The XDP program's per-outcome counters summed over CPUs.
    pub fn counters(&self) -> Result<Vec<(Counter, u64)>> {
        self.read_counters(&Counter::ALL)
    }

    /// The sk_lookup program's per-outcome counters.
    pub fn sk_counters(&self) -> Result<Vec<(Counter, u64)>> {
        self.read_counters(&Counter::SK_ALL)
    }

    /// The reporting counters (reports sent to the controller, suppressed).
    pub fn report_counters(&self) -> Result<Vec<(Counter, u64)>> {
        self.read_counters(&Counter::REPORT_ALL)
    }

    fn read_counters(&self, which: &[Counter]) -> Result<Vec<(Counter, u64)>> {
        which.iter().map(|c| Ok((*c, self.counter(*c)?))).collect()
    }

    /// Defer mode's explanation records written (`Counter::EXPLAIN_ALL`).
    pub fn explain_counters(&self) -> Result<Vec<(Counter, u64)>> {
        self.read_counters(&Counter::EXPLAIN_ALL)
    }

    /// One counter summed over CPUs (0 for a slot the gate's maps predate).
    pub fn counter(&self, c: Counter) -> Result<u64> {
        match counter_slot(c) {
            (false, i) => Ok(sum(&self.counters.get(&i, 0)?)),
            (true, i) => match &self.explain {
                Some(x) => Ok(sum(&x.counters_ext.get(&i, 0)?)),
                None => Ok(0),
            },
        }
    }

    pub fn partner_hits(&self, id: PartnerId) -> Result<u64> {
        Ok(sum(&self.partner_hits.get(&id, 0)?))
    }

    pub fn reset_partner_hits(&mut self, id: PartnerId) -> Result<()> {
        let n = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        self.partner_hits
            .set(id, PerCpuValues::try_from(vec![0u64; n])?, 0)?;
        Ok(())
    }
}

impl ExplainMaps {
    /// Records in EXPLAINED, and how many of them are within the window
    /// of `x` now (one syscall per entry: for status and metrics, not
    /// for a hot path).
    pub fn count(&self, x: &DeferConfig, now_ns: u64) -> Result<(u64, u64)> {
        let (mut all, mut live) = (0, 0);
        for e in self.explained.iter() {
            let (_, r) = match e {
                Ok(kv) => kv,
                // Evicted between the key walk and the read.
                Err(aya::maps::MapError::KeyNotFound) => continue,
                Err(e) => return Err(e).context("reading the EXPLAINED map"),
            };
            all += 1;
            // Port 0 is never a source port: asks about a new attempt.
            if mx6gate_common::explain::seen(x, Some(&r), now_ns, 0, 0)
                == mx6gate_common::explain::Seen::Repeat
            {
                live += 1;
            }
        }
        Ok((all, live))
    }

    /// All three, or None if the gate predates them (all or none: they
    /// arrived together).
    fn open(l: &PinLayout) -> Result<Option<ExplainMaps>> {
        if !l.map(map_names::DEFER).exists() {
            return Ok(None);
        }
        Ok(Some(ExplainMaps {
            defer: open(l, map_names::DEFER)?.try_into()?,
            explained: open(l, map_names::EXPLAINED)?.try_into()?,
            counters_ext: open(l, map_names::COUNTERS_EXT)?.try_into()?,
            explained_capacity: MapInfo::from_pin(l.map(map_names::EXPLAINED))?.max_entries(),
        }))
    }
}

fn sum(v: &PerCpuValues<u64>) -> u64 {
    v.iter().sum()
}

/// `bytes` of an mmapable ARRAY map (BPF_F_MMAPABLE) mapped shared into
/// this process: loads and stores through it are the map's own memory.
fn map_shared(map: &MapData, bytes: usize, path: &Path) -> Result<*mut libc::c_void> {
    use std::os::fd::{AsFd, AsRawFd};
    // SAFETY: a new mapping of the map's fd; the kernel refuses a length
    // beyond the map's values.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            map.fd().as_fd().as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("mapping {} into memory", path.display()));
    }
    Ok(ptr)
}

/// The OCCUPIED bitmap (an mmap-able BPF array of u64 words), mapped
/// shared into this process: the programs see every store at once, and a
/// word changes with one aligned 8-byte store, so a program never sees
/// half of an update.
pub struct Occupied {
    ptr: *mut u64,
    _map: MapData,
}

// SAFETY: the mapping is plain shared memory accessed only through atomics.
unsafe impl Send for Occupied {}
unsafe impl Sync for Occupied {}

impl Occupied {
    const BYTES: usize = OCCUPIED_ENTRIES as usize * 8;

    fn open(layout: &PinLayout) -> Result<Occupied> {
        let path = layout.map(map_names::OCCUPIED);
        let map = MapData::from_pin(&path)
            .with_context(|| format!("opening pinned map {}", path.display()))?;
        let info = map.info()?;
        if info.max_entries() != OCCUPIED_ENTRIES || info.value_size() != 8 {
            anyhow::bail!(
                "pinned map {} has {} entries of {} bytes, this build needs {OCCUPIED_ENTRIES} of 8 (made by another mx6gate version: run `mx6gate detach`, then start again)",
                path.display(),
                info.max_entries(),
                info.value_size()
            );
        }
        let ptr = map_shared(&map, Self::BYTES, &path)?;
        Ok(Occupied {
            ptr: ptr.cast(),
            _map: map,
        })
    }

    fn word(&self, i: u32) -> &std::sync::atomic::AtomicU64 {
        assert!(i < OCCUPIED_ENTRIES, "OCCUPIED word {i} out of range");
        // SAFETY: in bounds (checked), 8-byte aligned (page-aligned base),
        // and only ever accessed atomically from this side.
        unsafe { std::sync::atomic::AtomicU64::from_ptr(self.ptr.add(i as usize)) }
    }

    /// Word `i`: a cell word below OCCUPIED_WORDS, a summary word from there.
    pub fn get(&self, i: u32) -> u64 {
        self.word(i).load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn set(&self, i: u32, v: u64) {
        self.word(i).store(v, std::sync::atomic::Ordering::Release)
    }

    /// Whether summary cell `c` (a /20) is set.
    pub fn summary(&self, c: u32) -> bool {
        self.get(OCCUPIED_WORDS + c / 64) & (1 << (c % 64)) != 0
    }

    /// Set or clear summary cell `c`, leaving the word's other bits alone.
    pub fn set_summary(&self, c: u32, on: bool) {
        use std::sync::atomic::Ordering::AcqRel;
        let w = self.word(OCCUPIED_WORDS + c / 64);
        if on {
            w.fetch_or(1 << (c % 64), AcqRel);
        } else {
            w.fetch_and(!(1 << (c % 64)), AcqRel);
        }
    }

    /// The set summary cells.
    pub fn read_summary(&self) -> std::collections::BTreeMap<u32, ()> {
        (0..OCCUPIED_ENTRIES - OCCUPIED_WORDS)
            .flat_map(|i| {
                let w = self.get(OCCUPIED_WORDS + i);
                (0..64)
                    .filter(move |b| w & (1 << b) != 0)
                    .map(move |b| (i * 64 + b, ()))
            })
            .collect()
    }

    /// Every non-zero cell word. Only the words under set summary cells
    /// are read (the controller keeps "a word is non-zero ⇒ its summary
    /// cell is set" true at every step, see `allowlist::write_diff`): a
    /// small list does not fault in the whole 4 MiB mapping.
    pub fn read(&self) -> std::collections::BTreeMap<u32, u64> {
        // A summary cell covers 2^SUMMARY_SHIFT cells: this many words.
        let per = (1 << SUMMARY_SHIFT) / 64;
        self.read_summary()
            .into_keys()
            .flat_map(|c| c * per..(c + 1) * per)
            .map(|i| (i, self.get(i)))
            .filter(|(_, w)| *w != 0)
            .collect()
    }
}

impl Drop for Occupied {
    fn drop(&mut self) {
        unsafe { libc::munmap(self.ptr.cast(), Self::BYTES) };
    }
}

/// SLASH32_TABLE (see `mx6gate_common::allow::TableHeader`), mapped shared
/// into this process: the controller writes the inactive image with plain
/// stores and publishes it with one store of the generation. What goes
/// where is `crate::allowlist`'s business; this is the memory.
pub struct Table {
    ptr: *mut Slot,
    entries: u32,
    /// The map the mapping is of (None: anonymous memory, for tests).
    _map: Option<MapData>,
}

// SAFETY: shared memory; the writer is one controller at a time (the pin
// lock), and the kernel only reads it.
unsafe impl Send for Table {}
unsafe impl Sync for Table {}

impl Table {
    /// Open the pinned table of a gate whose maps hold `capacity` entries,
    /// setting its header up if it is new (all zero).
    pub fn open_pinned(path: &Path, capacity: u32) -> Result<Table> {
        let map = MapData::from_pin(path)
            .with_context(|| format!("opening pinned map {}", path.display()))?;
        let info = map.info()?;
        let entries = info.max_entries();
        if info.value_size() as usize != std::mem::size_of::<Slot>()
            || entries != table_entries(capacity)
        {
            anyhow::bail!(
                "pinned map {} has {entries} entries of {} bytes, this build needs {} of {} for maps of {capacity} (made by another mx6gate version: run `mx6gate detach`, then start again)",
                path.display(),
                info.value_size(),
                table_entries(capacity),
                std::mem::size_of::<Slot>()
            );
        }
        let ptr = map_shared(&map, entries as usize * std::mem::size_of::<Slot>(), path)?;
        let t = Table {
            ptr: ptr.cast(),
            entries,
            _map: Some(map),
        };
        t.shape(capacity);
        let h = t.header();
        if h.image_base(2) > entries
            || h.slots + mx6gate_common::allow::PROBE_LIMIT + h.stash > h.stride
        {
            anyhow::bail!(
                "pinned map {} has a header that does not fit it ({h:?}): run `mx6gate detach`, then start again",
                path.display()
            );
        }
        Ok(t)
    }

    fn open(layout: &PinLayout, capacity: u32) -> Result<Table> {
        Self::open_pinned(&layout.map(map_names::SLASH32_TABLE), capacity)
    }

    /// A table for `capacity` /32s in anonymous memory (no map), for tests
    /// of what `allowlist` does to it.
    pub fn anonymous(capacity: u32) -> Table {
        let entries = table_entries(capacity);
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                entries as usize * std::mem::size_of::<Slot>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(
            ptr != libc::MAP_FAILED,
            "{}",
            std::io::Error::last_os_error()
        );
        let t = Table {
            ptr: ptr.cast(),
            entries,
            _map: None,
        };
        t.shape(capacity);
        t
    }

    /// A new table (all zero) gets its shape, before any program can see
    /// a slot (until then every lookup finds slot 1 empty: no /32 at all).
    fn shape(&self, capacity: u32) {
        if self.header().slots != 0 {
            return;
        }
        let (slots, stash, stride) = table_shape(capacity);
        let mut h = self.header();
        h.slots = slots;
        h.stash = stash;
        h.stride = stride;
        self.set_header(&h);
    }

    /// The header as it is now.
    pub fn header(&self) -> TableHeader {
        // SAFETY: slot 0 exists and has the header's size and alignment.
        unsafe { std::ptr::read_volatile(self.ptr.cast::<TableHeader>()) }
    }

    /// Write the header, all but the generation (see `publish`).
    pub fn set_header(&self, h: &TableHeader) {
        let mut h = *h;
        h.generation = self.header().generation;
        // SAFETY: as in `header`. The programs read the shape fields only
        // after the controller set them (before any slot was used) and
        // `unplaced` of the active image only as the controller left it
        // for that image (see `allowlist`).
        unsafe { std::ptr::write_volatile(self.ptr.cast::<TableHeader>(), h) }
    }

    /// The image the programs read.
    pub fn active(&self) -> u32 {
        self.generation_word()
            .load(std::sync::atomic::Ordering::Acquire)
            & 1
    }

    /// Make the other image the one the programs read: one aligned 4-byte
    /// store, after (Release) every store into that image.
    pub fn publish(&self) {
        self.generation_word()
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    fn generation_word(&self) -> &std::sync::atomic::AtomicU32 {
        // SAFETY: the header's first field, 4-byte aligned (page-aligned base).
        unsafe { std::sync::atomic::AtomicU32::from_ptr(self.ptr.cast::<u32>()) }
    }

    /// Slot `i` (not the header).
    pub fn slot(&self, i: u32) -> &Slot {
        assert!(
            i >= 1 && i < self.entries,
            "SLASH32_TABLE slot {i} out of range"
        );
        // SAFETY: in bounds; the kernel never writes it, and this process
        // writes only slots of the image no program reads (`allowlist`).
        unsafe { &*self.ptr.add(i as usize) }
    }

    pub fn set_slot(&self, i: u32, s: &Slot) {
        assert!(
            i >= 1 && i < self.entries,
            "SLASH32_TABLE slot {i} out of range"
        );
        // SAFETY: as in `slot`.
        unsafe { std::ptr::write_volatile(self.ptr.add(i as usize), *s) }
    }

    /// Copy image `from` over the other one, slots and stash (memcpy).
    pub fn copy_image(&self, from: u32) {
        let h = self.header();
        let (src, dst) = (h.image_base(from), h.image_base(1 - from));
        // SAFETY: both ranges lie in the mapping (checked at open) and do
        // not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.add(src as usize),
                self.ptr.add(dst as usize),
                h.stride as usize,
            )
        }
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        unsafe {
            libc::munmap(
                self.ptr.cast(),
                self.entries as usize * std::mem::size_of::<Slot>(),
            )
        };
    }
}

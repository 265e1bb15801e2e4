//! Small runtime state under `state_dir`, and the lock every changing
//! command holds:
//!
//! ```text
//! <state_dir>/lock               flock(2)ed by every command that changes
//!                                the store, the maps or this directory
//! <state_dir>/mode               the mode set by `mx6gate mode` (one word);
//!                                overrides the config file's `mode`
//! <state_dir>/partner-ids.toml   partner name = id (index into PARTNER_HITS)
//! ```
//!
//! Files are replaced atomically (fsutil::write_atomic).
use std::{
    collections::{BTreeMap, BTreeSet},
    fs::{File, OpenOptions},
    io::ErrorKind,
    os::{fd::AsRawFd, unix::fs::OpenOptionsExt},
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, Result};
use mx6gate_common::Mode;

use crate::{config::parse_mode, fsutil};

pub const LOCK_FILE: &str = "lock";
pub const MODE_FILE: &str = "mode";
pub const IDS_FILE: &str = "partner-ids.toml";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    pub path: PathBuf,
}

/// Holds the exclusive flock on `<state_dir>/lock`; released on drop (or
/// by the kernel if the process dies).
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

/// A small state file, never opened blocking (a FIFO put in its place is
/// an error naming it, not a hang); None when it does not exist.
pub fn read_state_file(path: &Path) -> Result<Option<String>> {
    match fsutil::read_regular(path, 16 << 20) {
        Ok(fsutil::Regular::Text(t)) => Ok(Some(t)),
        Ok(fsutil::Regular::NotRegular(kind)) => {
            bail!("{}: {kind}, not a regular file", path.display())
        }
        Err(_) if !path.exists() && path.symlink_metadata().is_err() => Ok(None),
        Err(e) => Err(e),
    }
}

impl StateDir {
    pub fn new(path: &Path) -> StateDir {
        StateDir {
            path: path.to_path_buf(),
        }
    }

    pub fn lock_path(&self) -> PathBuf {
        self.path.join(LOCK_FILE)
    }

    pub fn mode_path(&self) -> PathBuf {
        self.path.join(MODE_FILE)
    }

    pub fn ids_path(&self) -> PathBuf {
        self.path.join(IDS_FILE)
    }

    /// Create the directory if needed and take the exclusive lock, waiting
    /// for whoever holds it.
    pub fn lock(&self) -> Result<StateLock> {
        fsutil::create_dir_all(&self.path)?;
        let path = self.lock_path();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path)
            .map_err(|e| anyhow!("{}: cannot open lock file: {e}", path.display()))?;
        loop {
            // SAFETY: flock(2) on a descriptor we own; no memory involved.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(StateLock { _file: file });
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != ErrorKind::Interrupted {
                bail!("{}: cannot lock: {err}", path.display());
            }
        }
    }

    /// The mode set by `mx6gate mode`, if any.
    pub fn mode_override(&self) -> Result<Option<Mode>> {
        let path = self.mode_path();
        let Some(text) = read_state_file(&path)? else {
            return Ok(None);
        };
        parse_mode(text.trim())
            .map(Some)
            .map_err(|e| anyhow!("{}: {e} (fix it with `mx6gate mode WORD`)", path.display()))
    }

    /// Persist `mode` as the override (atomic).
    pub fn set_mode(&self, mode: Mode) -> Result<()> {
        fsutil::write_atomic(&self.mode_path(), format!("{}\n", mode.as_str()).as_bytes())
    }

    /// Drop the override, so the config file's `mode` applies again.
    /// Returns whether there was one.
    pub fn clear_mode(&self) -> Result<bool> {
        fsutil::remove_durable(&self.mode_path())
    }

    /// The partner ids; an absent file means none assigned yet.
    pub fn load_ids(&self) -> Result<PartnerIds> {
        let path = self.ids_path();
        let Some(text) = read_state_file(&path)? else {
            return Ok(PartnerIds::default());
        };
        let raw: BTreeMap<String, i64> = toml::from_str(&text)
            .map_err(|e| anyhow!("{}: {}", path.display(), e.to_string().trim_end()))?;
        let mut ids = BTreeMap::new();
        let mut owner: BTreeMap<u32, &str> = BTreeMap::new();
        for (name, id) in &raw {
            let Ok(id) = u32::try_from(*id) else {
                bail!(
                    "{}: {name:?}: {id} is not a valid partner id",
                    path.display()
                );
            };
            if let Some(other) = owner.insert(id, name) {
                bail!(
                    "{}: id {id} is given to both {other:?} and {name:?}",
                    path.display()
                );
            }
            ids.insert(name.clone(), id);
        }
        Ok(PartnerIds { ids })
    }

    pub fn save_ids(&self, ids: &PartnerIds) -> Result<()> {
        let body = toml::to_string(&ids.ids)
            .map_err(|e| anyhow!("{}: cannot serialize: {e}", self.ids_path().display()))?;
        let text = format!(
            "# Partner name = id (its slot in the PARTNER_HITS map). Written by mx6gate.\n{body}"
        );
        fsutil::write_atomic(&self.ids_path(), text.as_bytes())
    }
}

/// Stable small ids for partners: the index of each partner's hit counter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartnerIds {
    pub ids: BTreeMap<String, u32>,
}

impl PartnerIds {
    /// Keep ids of names still present, drop the others, give each new name
    /// (in name order) the lowest free id below `max`. Returns the ids newly
    /// assigned: their per-partner hit counters must be zeroed by the
    /// caller, since a freed id may be reused. A kept id not below `max`
    /// (the map shrank) is reassigned and counts as new. More names than
    /// `max` is an error, and `self` is then unchanged.
    pub fn assign(&mut self, names: &[&str], max: u32) -> Result<Vec<u32>> {
        let wanted: BTreeSet<&str> = names.iter().copied().collect();
        if wanted.len() as u64 > u64::from(max) {
            bail!(
                "{} partners, but the partner map holds {max} (maps.max_partners); raise maps.max_partners, then `mx6gate detach` and restart to resize",
                wanted.len()
            );
        }
        let mut next_ids: BTreeMap<String, u32> = BTreeMap::new();
        let mut used: BTreeSet<u32> = BTreeSet::new();
        for (name, id) in &self.ids {
            if wanted.contains(name.as_str()) && *id < max && used.insert(*id) {
                next_ids.insert(name.clone(), *id);
            }
        }
        let mut fresh = Vec::new();
        let mut candidate = 0u32;
        for name in wanted {
            if next_ids.contains_key(name) {
                continue;
            }
            while used.contains(&candidate) {
                candidate += 1;
            }
            used.insert(candidate);
            next_ids.insert(name.to_string(), candidate);
            fresh.push(candidate);
        }
        self.ids = next_ids;
        Ok(fresh)
    }

    pub fn get(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }
}

impl StateDir {
    /// `mx6gate.pid`: the running daemon's pid, written under the lock.
    pub fn pid_path(&self) -> PathBuf {
        self.path.join("mx6gate.pid")
    }

    /// The pid of the daemon running for this state dir, if one is alive
    /// and really mx6gate (a recycled pid would be someone else).
    pub fn running_daemon(&self) -> Option<i32> {
        let pid: i32 = read_state_file(&self.pid_path())
            .ok()??
            .trim()
            .parse()
            .ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == "mx6gate").then_some(pid)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeMap as Map,
        fs,
        sync::{
            atomic::{AtomicBool, Ordering},
            Arc,
        },
        time::Duration,
    };

    use super::*;

    fn snapshot(dir: &Path) -> Map<String, Vec<u8>> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    fs::read(e.path()).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn mode_roundtrip_and_absent() {
        let t = tempfile::tempdir().unwrap();
        let sd = StateDir::new(&t.path().join("state"));
        assert_eq!(sd.mode_override().unwrap(), None);
        for m in Mode::ALL {
            sd.set_mode(m).unwrap();
            assert_eq!(sd.mode_override().unwrap(), Some(m));
        }
        assert_eq!(fs::read_to_string(sd.mode_path()).unwrap(), "drop\n");
        assert!(sd.clear_mode().unwrap());
        assert_eq!(sd.mode_override().unwrap(), None);
        assert!(!sd.clear_mode().unwrap());
    }

    #[test]
    fn mode_file_tolerates_whitespace() {
        let t = tempfile::tempdir().unwrap();
        let sd = StateDir::new(t.path());
        fs::write(sd.mode_path(), "  reset \n\n").unwrap();
        assert_eq!(sd.mode_override().unwrap(), Some(Mode::Reset));
    }

    #[test]
    fn garbage_mode_file_names_the_file_and_changes_nothing() {
        let t = tempfile::tempdir().unwrap();
        let sd = StateDir::new(t.path());
        for garbage in ["block\n", "", "drop drop\n", "DROP"] {
            fs::write(sd.mode_path(), garbage).unwrap();
            let before = snapshot(t.path());
            let e = format!("{:#}", sd.mode_override().unwrap_err());
            assert!(e.contains(&sd.mode_path().display().to_string()), "{e}");
            assert!(
                e.contains("is not one of monitor, defer, reset, drop"),
                "{e}"
            );
            assert_eq!(snapshot(t.path()), before);
        }
    }

    #[test]
    fn a_fifo_in_place_of_a_state_file_is_an_error_not_a_hang() {
        let t = tempfile::tempdir().unwrap();
        let sd = StateDir::new(t.path());
        let c = std::ffi::CString::new(sd.mode_path().as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let e = format!("{:#}", sd.mode_override().unwrap_err());
        assert!(e.contains("a FIFO") && e.contains("mode"), "{e}");
        assert_eq!(read_state_file(&t.path().join("absent")).unwrap(), None);
    }

    #[test]
    fn ids_roundtrip() {
        let t = tempfile::tempdir().unwrap();
        let sd = StateDir::new(&t.path().join("s"));
        assert_eq!(sd.load_ids().unwrap(), PartnerIds::default());
        let mut ids = PartnerIds::default();
        ids.assign(&["example-isp", "a.b", "z_1"], 10).unwrap();
        sd.save_ids(&ids).unwrap();
        assert_eq!(sd.load_ids().unwrap(), ids);
        let names: Vec<String> = snapshot(&sd.path).into_keys().collect();
        assert_eq!(names, vec![IDS_FILE], "no temp file left");
    }

    #[test]
    fn bad_ids_file_names_the_file_and_item() {
        let t = tempfile::tempdir().unwrap();
        let sd = StateDir::new(t.path());
        let f = sd.ids_path().display().to_string();
        for (text, wants) in [
            ("a = 1\nb = 1\n", vec!["id 1", "\"a\"", "\"b\""]),
            ("a = -1\n", vec!["\"a\"", "-1"]),
            ("a = 4294967296\n", vec!["\"a\"", "4294967296"]),
            ("a = \"x\"\n", vec!["line 1"]),
            ("a = [\n", vec!["line"]),
        ] {
            fs::write(sd.ids_path(), text).unwrap();
            let before = snapshot(t.path());
            let e = format!("{:#}", sd.load_ids().unwrap_err());
            assert!(e.starts_with(&format!("{f}: ")), "{text} => {e}");
            for w in wants {
                assert!(e.contains(w), "{text} => {e}; missing {w}");
            }
            assert_eq!(snapshot(t.path()), before);
        }
    }

    #[test]
    fn assign_keeps_drops_and_reuses_lowest_free() {
        let mut ids = PartnerIds::default();
        // Fresh names get 0, 1, 2 in name order.
        assert_eq!(ids.assign(&["c", "a", "b"], 8).unwrap(), vec![0, 1, 2]);
        assert_eq!(
            (ids.get("a"), ids.get("b"), ids.get("c")),
            (Some(0), Some(1), Some(2))
        );
        // Same names again: nothing new, nothing moves.
        assert_eq!(ids.assign(&["a", "b", "c"], 8).unwrap(), Vec::<u32>::new());
        // "b" goes: its id is freed; a new name takes the lowest free (1),
        // and the caller is told so it zeroes that counter.
        assert_eq!(ids.assign(&["a", "c"], 8).unwrap(), Vec::<u32>::new());
        assert_eq!(ids.get("b"), None);
        assert_eq!(ids.assign(&["a", "c", "d", "e"], 8).unwrap(), vec![1, 3]);
        assert_eq!(
            (ids.get("a"), ids.get("c"), ids.get("d"), ids.get("e")),
            (Some(0), Some(2), Some(1), Some(3))
        );
        // Duplicated names count once.
        assert_eq!(
            ids.assign(&["a", "a", "c", "d", "e"], 4).unwrap(),
            Vec::<u32>::new()
        );
    }

    #[test]
    fn assign_reassigns_ids_beyond_a_smaller_map() {
        let mut ids = PartnerIds::default();
        ids.assign(&["a", "b", "c", "d"], 8).unwrap();
        ids.assign(&["a", "d"], 8).unwrap();
        assert_eq!(ids.get("d"), Some(3));
        // The map now holds 2: "d" (3) must move into range.
        assert_eq!(ids.assign(&["a", "d"], 2).unwrap(), vec![1]);
        assert_eq!((ids.get("a"), ids.get("d")), (Some(0), Some(1)));
    }

    #[test]
    fn assign_refuses_too_many_and_changes_nothing() {
        let mut ids = PartnerIds::default();
        ids.assign(&["a", "b"], 3).unwrap();
        let before = ids.clone();
        let e = format!("{:#}", ids.assign(&["a", "b", "c", "d"], 3).unwrap_err());
        assert!(
            e.contains("max_partners") && e.contains('4') && e.contains('3'),
            "{e}"
        );
        assert_eq!(ids, before);
        // Exactly max is fine: every id 0..max is used.
        assert_eq!(ids.assign(&["a", "b", "c"], 3).unwrap(), vec![2]);
        assert!(ids.assign(&[], 1).unwrap().is_empty());
        assert!(ids.ids.is_empty());
    }

    #[test]
    fn assign_survives_duplicate_ids_in_memory() {
        // Not loadable from disk (load_ids refuses), but assign must still
        // hand out distinct ids.
        let mut ids = PartnerIds {
            ids: [("a".to_string(), 0), ("b".to_string(), 0)]
                .into_iter()
                .collect(),
        };
        assert_eq!(ids.assign(&["a", "b"], 4).unwrap(), vec![1]);
        assert_eq!((ids.get("a"), ids.get("b")), (Some(0), Some(1)));
    }

    #[test]
    fn lock_creates_dir_and_excludes() {
        let t = tempfile::tempdir().unwrap();
        let sd = StateDir::new(&t.path().join("a/b"));
        let held = sd.lock().unwrap();
        assert!(sd.lock_path().exists());
        let got = Arc::new(AtomicBool::new(false));
        let (sd2, got2) = (sd.clone(), got.clone());
        let waiter = std::thread::spawn(move || {
            let _l = sd2.lock().unwrap();
            got2.store(true, Ordering::SeqCst);
        });
        std::thread::sleep(Duration::from_millis(200));
        assert!(!got.load(Ordering::SeqCst), "second lock must wait");
        drop(held);
        waiter.join().unwrap();
        assert!(got.load(Ordering::SeqCst));
        // Re-lockable after release, and the lock file is kept.
        let _again = sd.lock().unwrap();
        assert!(sd.lock_path().exists());
    }

    #[test]
    fn lock_on_unusable_dir_names_it() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("file");
        fs::write(&f, "x").unwrap();
        let e = format!("{:#}", StateDir::new(&f).lock().unwrap_err());
        assert!(e.contains(&f.display().to_string()), "{e}");
        assert_eq!(fs::read_to_string(&f).unwrap(), "x");
    }
}

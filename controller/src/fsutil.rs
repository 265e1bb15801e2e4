//! Crash-safe file updates (invariant 6): a reader, or the next controller
//! after a crash or power loss, sees either the old file or the new one,
//! never a torn one.
//!
//! Temp files are named `.NAME.tmp.PID.N`: hidden and not ending in `.toml`,
//! so a partner store load never counts one left behind by a crash.
use std::{
    fs::{self, DirBuilder, File, OpenOptions, Permissions},
    io::{ErrorKind, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::{anyhow, bail, Result};

/// Mode of every file written here: root writes, everyone reads.
const FILE_MODE: u32 = 0o644;
/// Mode of directories created here.
const DIR_MODE: u32 = 0o755;

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// The directory holding `path` (`.` for a bare file name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Create `dir` and any missing parents with mode 0755.
pub fn create_dir_all(dir: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| anyhow!("creating directory {}: {e}", dir.display()))
}

/// fsync a directory, so a rename or unlink inside it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| anyhow!("syncing directory {}: {e}", dir.display()))
}

/// Replace `path` with `bytes` atomically: write a temp file in the same
/// directory, fsync it, rename it over `path`, fsync the directory. The
/// parent directory is created (0755) if missing; the file ends up 0644.
/// On error the temp file is removed and `path` is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = match path.file_name() {
        Some(n) => n.to_string_lossy().into_owned(),
        None => bail!("{}: not a file path", path.display()),
    };
    let dir = parent_of(path);
    create_dir_all(dir)?;
    let tmp: PathBuf = dir.join(format!(
        ".{name}.tmp.{}.{}",
        std::process::id(),
        TMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let result = write_tmp(&tmp, bytes).and_then(|()| {
        fs::rename(&tmp, path).map_err(|e| anyhow!("replacing {}: {e}", path.display()))
    });
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)
}

fn write_tmp(tmp: &Path, bytes: &[u8]) -> Result<()> {
    let err = |e: std::io::Error| anyhow!("writing {}: {e}", tmp.display());
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(tmp)
        .map_err(err)?;
    // The umask may have narrowed the mode given to open(2).
    f.set_permissions(Permissions::from_mode(FILE_MODE))
        .map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)
}

/// Remove `path` durably (unlink, then fsync its directory). Returns false
/// when it did not exist.
pub fn remove_durable(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => {
            sync_dir(parent_of(path))?;
            Ok(true)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(anyhow!("removing {}: {e}", path.display())),
    }
}

/// What [`read_regular`] found at a path.
#[derive(Debug)]
pub enum Regular {
    /// A regular file (or a symlink to one), read whole.
    Text(String),
    /// Something else (a FIFO, a socket, a device, a directory): never
    /// read, since reading a FIFO or a device can block for ever. The
    /// kind, for the operator.
    NotRegular(&'static str),
}

/// Read `path` if it is a regular file of at most `max_len` bytes, never
/// blocking on what is not one: it is opened with O_NONBLOCK (opening a
/// FIFO with no writer then returns at once) and checked with fstat(2)
/// on the opened descriptor, so a file swapped in between cannot get past
/// the check.
pub fn read_regular(path: &Path, max_len: u64) -> Result<Regular> {
    use std::{io::Read, os::unix::fs::FileTypeExt};
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| anyhow!("{}: cannot read: {e}", path.display()))?;
    let meta = f
        .metadata()
        .map_err(|e| anyhow!("{}: cannot read: {e}", path.display()))?;
    let t = meta.file_type();
    if !t.is_file() {
        let kind = if t.is_fifo() {
            "a FIFO"
        } else if t.is_socket() {
            "a socket"
        } else if t.is_char_device() || t.is_block_device() {
            "a device"
        } else if t.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        return Ok(Regular::NotRegular(kind));
    }
    if meta.len() > max_len {
        bail!(
            "{}: {} bytes, more than the {max_len} bytes accepted",
            path.display(),
            meta.len()
        );
    }
    let mut text = String::with_capacity(meta.len() as usize);
    // A file that grows while being read is still bounded.
    f.take(max_len + 1)
        .read_to_string(&mut text)
        .map_err(|e| anyhow!("{}: cannot read: {e}", path.display()))?;
    if text.len() as u64 > max_len {
        bail!("{}: more than the {max_len} bytes accepted", path.display());
    }
    Ok(Regular::Text(text))
}

/// The temp files `write_atomic` names `.NAME.tmp.PID.N`, left in `dir`
/// by writers that died before renaming them (a killed CLI): removed when
/// PID is not a live process. A live writer's are left alone. Returns what
/// was removed; a directory that cannot be read has nothing to clean.
pub fn remove_stale_temps(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(temp_writer_pid) else {
            continue;
        };
        // SAFETY: kill(2) with signal 0 only checks for existence.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive && e.file_type().is_ok_and(|t| t.is_file()) && fs::remove_file(e.path()).is_ok() {
            removed.push(e.path());
        }
    }
    removed
}

/// The writer's pid in a temp file name `.NAME.tmp.PID.N`.
fn temp_writer_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix('.')?;
    let (_, tail) = rest.rsplit_once(".tmp.")?;
    let (pid, seq) = tail.split_once('.')?;
    seq.parse::<u64>().ok()?;
    pid.parse::<i32>().ok().filter(|p| *p > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn writes_new_file_creating_parents() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("a/b/file.toml");
        write_atomic(&p, b"hello\n").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"hello\n");
        assert_eq!(mode_of(&p), 0o644);
        assert_eq!(mode_of(&t.path().join("a")), 0o755);
        assert_eq!(mode_of(&t.path().join("a/b")), 0o755);
        // No temp file left behind.
        assert_eq!(entries(&t.path().join("a/b")), vec!["file.toml"]);
    }

    #[test]
    fn replaces_existing_file_and_resets_mode() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        fs::write(&p, b"old contents that are longer").unwrap();
        fs::set_permissions(&p, Permissions::from_mode(0o600)).unwrap();
        write_atomic(&p, b"new").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(mode_of(&p), 0o644);
        assert_eq!(entries(t.path()), vec!["f"]);
    }

    #[test]
    fn failure_leaves_target_and_no_temp() {
        let t = tempfile::tempdir().unwrap();
        // Renaming a file over a non-empty directory fails.
        let p = t.path().join("target");
        fs::create_dir(&p).unwrap();
        fs::write(p.join("keep"), b"x").unwrap();
        let err = write_atomic(&p, b"data").unwrap_err().to_string();
        assert!(err.contains(&p.display().to_string()), "{err}");
        assert_eq!(entries(t.path()), vec!["target"]);
        assert_eq!(fs::read(p.join("keep")).unwrap(), b"x");
    }

    #[test]
    fn parent_is_a_file_is_an_error_naming_it() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("plain");
        fs::write(&f, b"x").unwrap();
        let err = write_atomic(&f.join("child"), b"data")
            .unwrap_err()
            .to_string();
        assert!(err.contains("plain"), "{err}");
        assert_eq!(fs::read(&f).unwrap(), b"x");
    }

    #[test]
    fn remove_durable_reports_absence() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        fs::write(&p, b"x").unwrap();
        assert!(remove_durable(&p).unwrap());
        assert!(!p.exists());
        assert!(!remove_durable(&p).unwrap());
    }

    #[test]
    fn read_regular_never_opens_a_fifo_blocking() {
        let t = tempfile::tempdir().unwrap();
        let fifo = t.path().join("x.toml");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        // No writer: a blocking open would hang this test.
        match read_regular(&fifo, 1024).unwrap() {
            Regular::NotRegular(kind) => assert_eq!(kind, "a FIFO"),
            other => panic!("{other:?}"),
        }
        match read_regular(t.path(), 1024).unwrap() {
            Regular::NotRegular(kind) => assert_eq!(kind, "a directory"),
            other => panic!("{other:?}"),
        }
        let f = t.path().join("f");
        fs::write(&f, "hello").unwrap();
        std::os::unix::fs::symlink(&f, t.path().join("link")).unwrap();
        for p in [f.clone(), t.path().join("link")] {
            match read_regular(&p, 5).unwrap() {
                Regular::Text(s) => assert_eq!(s, "hello"),
                other => panic!("{other:?}"),
            }
        }
        let e = read_regular(&f, 4).unwrap_err().to_string();
        assert!(
            e.contains("5 bytes") && e.contains(&f.display().to_string()),
            "{e}"
        );
        let e = read_regular(&t.path().join("nope"), 4)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope") && e.contains("cannot read"), "{e}");
    }

    #[test]
    fn stale_temps_of_dead_writers_are_removed() {
        let t = tempfile::tempdir().unwrap();
        // A pid above pid_max never runs.
        let dead = ".acme.toml.tmp.2147483646.0";
        let live = format!(".acme.toml.tmp.{}.3", std::process::id());
        for n in [dead, &live, "acme.toml", ".hidden", ".x.tmp.notapid.1"] {
            fs::write(t.path().join(n), "x").unwrap();
        }
        let removed = remove_stale_temps(t.path());
        assert_eq!(removed, vec![t.path().join(dead)]);
        let mut left = entries(t.path());
        left.sort();
        let mut want = vec![
            live.clone(),
            ".hidden".into(),
            ".x.tmp.notapid.1".into(),
            "acme.toml".into(),
        ];
        want.sort();
        assert_eq!(left, want);
        assert!(remove_stale_temps(&t.path().join("missing")).is_empty());
        assert_eq!(temp_writer_pid(".a.b.tmp.12.7"), Some(12));
        assert_eq!(temp_writer_pid("a.tmp.12.7"), None);
    }

    #[test]
    fn temp_names_are_hidden_and_unique() {
        // Many writers in one process (threads) never collide.
        let t = tempfile::tempdir().unwrap();
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let p = t.path().join("same");
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        write_atomic(&p, format!("{i}").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(entries(t.path()), vec!["same"]);
    }
}

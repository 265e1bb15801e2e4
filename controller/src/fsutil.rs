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

//! The store on disk: which directory entries are store files, reading
//! them whole (or leniently, for diagnosis), and the atomic rewrite of
//! one partner's file.
use super::*;

pub(super) fn is_store_file(name: &str) -> bool {
    !name.starts_with('.') && name.ends_with(".toml") && name.len() > ".toml".len()
}

pub(super) fn file_label(p: &Path) -> String {
    p.display().to_string()
}

/// The store files in `dir`, in name order, and the entries skipped.
pub(super) fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, StoreRefused> {
    let refuse = |kind, message| StoreRefused {
        kind,
        file: None,
        message,
    };
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(refuse(
                RefusedKind::Missing,
                format!(
                    "{}: the partner directory does not exist (a vanished volume, a directory swap midway?); create it, even empty, to mean \"no partners\"",
                    dir.display()
                ),
            ))
        }
        Err(e) => {
            return Err(refuse(
                RefusedKind::Unreadable,
                format!("{}: cannot read partner directory: {e}", dir.display()),
            ))
        }
    };
    let mut files = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| {
            refuse(
                RefusedKind::Unreadable,
                format!("{}: cannot read partner directory: {e}", dir.display()),
            )
        })?;
        if entry.file_name().to_str().is_some_and(is_store_file) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

impl Store {
    /// An empty store for `dir`.
    pub fn empty(dir: &Path) -> Store {
        Store {
            dir: dir.to_path_buf(),
            ..Store::default()
        }
    }

    /// Load and validate every store file in `dir`, whole: the first bad
    /// item refuses the store ([`StoreRefused`] inside the error). Files
    /// are read in name order, so the first error reported is always the
    /// same one. A missing directory is refused too
    /// ([`RefusedKind::Missing`]); [`Store::load_or_new`] takes it as new.
    pub fn load(dir: &Path) -> Result<Store> {
        let (store, mut refused) = Self::read(dir, true);
        match refused.pop() {
            Some(r) => Err(r.into()),
            None => Ok(store),
        }
    }

    /// [`Store::load`], but a missing directory is a new, empty store (for
    /// edits, which create it).
    pub fn load_or_new(dir: &Path) -> Result<Store> {
        match Self::load(dir) {
            Err(e) if StoreRefused::of(&e).is_some_and(|r| r.kind == RefusedKind::Missing) => {
                Ok(Store::empty(dir))
            }
            other => other,
        }
    }

    /// For diagnosis (`status`, `partner list`, `check`): every file that
    /// reads cleanly, and a refusal for each one that does not (a file in
    /// conflict with an earlier one is refused whole). The store is then
    /// not what the gate enforces; callers say so.
    pub fn load_lenient(dir: &Path) -> (Store, Vec<StoreRefused>) {
        Self::read(dir, false)
    }

    pub(super) fn read(dir: &Path, stop_at_first: bool) -> (Store, Vec<StoreRefused>) {
        let mut store = Store::empty(dir);
        let mut refused = Vec::new();
        let files = match list_dir(dir) {
            Ok(f) => f,
            Err(r) => return (store, vec![r]),
        };
        // prefix -> owning partner, to catch a prefix listed twice.
        let mut owners: HashMap<Ipv6Net, String> = HashMap::new();
        for file in files {
            let text = match fsutil::read_regular(&file, MAX_FILE_BYTES) {
                Ok(Regular::Text(t)) => t,
                Ok(Regular::NotRegular(kind)) => {
                    store.skipped.push(format!(
                        "{}: {kind}, not a regular file: skipped",
                        file_label(&file)
                    ));
                    continue;
                }
                Err(e) => {
                    refused.push(StoreRefused::bad_file(&file, format!("{e:#}")));
                    if stop_at_first {
                        break;
                    }
                    continue;
                }
            };
            match store.add_file(&file, &text, &mut owners) {
                Ok(()) => store.files += 1,
                Err(r) => {
                    refused.push(r);
                    if stop_at_first {
                        break;
                    }
                }
            }
        }
        (store, refused)
    }

    /// Add one file's partners, checked against those already loaded; on
    /// error nothing of the file is added.
    pub(super) fn add_file(
        &mut self,
        file: &Path,
        text: &str,
        owners: &mut HashMap<Ipv6Net, String>,
    ) -> Result<(), StoreRefused> {
        let partners = parse_file(file, text)?;
        let mut names: HashSet<&str> = HashSet::new();
        let mut claimed: HashMap<Ipv6Net, &str> = HashMap::new();
        for p in &partners {
            if let Some(other) = self.partners.get(&p.name) {
                return Err(StoreRefused::bad_file(
                    file,
                    format!(
                        "partner {:?} is defined in both {} and {}",
                        p.name,
                        file_label(&other.file),
                        file_label(file)
                    ),
                ));
            }
            if !names.insert(&p.name) {
                return Err(StoreRefused::bad_file(
                    file,
                    format!(
                        "{}: partner {:?} is defined twice",
                        file_label(file),
                        p.name
                    ),
                ));
            }
            for net in &p.prefixes {
                let owner = owners
                    .get(net)
                    .map(|o| (o.as_str(), &self.partners[o].file))
                    .or_else(|| claimed.get(net).map(|o| (*o, &p.file)));
                if let Some((owner, owner_file)) = owner {
                    return Err(StoreRefused::bad_file(
                        file,
                        format!(
                            "{}: partner {:?}: prefix {net} is already allowed for partner {owner:?} ({})",
                            file_label(file),
                            p.name,
                            file_label(owner_file)
                        ),
                    ));
                }
                claimed.insert(*net, &p.name);
            }
        }
        for (net, name) in claimed {
            owners.insert(net, name.to_string());
        }
        for p in partners {
            self.partners.insert(p.name.clone(), p);
        }
        Ok(())
    }

    /// The file that holds (or, if removed since load, held) partner
    /// `name`; for a name never seen, the file `add` would create.
    pub fn file_of(&self, name: &str) -> PathBuf {
        match (self.partners.get(name), self.removed.get(name)) {
            (Some(p), _) => p.file.clone(),
            (None, Some(f)) => f.clone(),
            (None, None) => self.dir.join(format!("{name}.toml")),
        }
    }

    /// Atomically rewrite the file holding partner `changed` (all partners
    /// of that file, by name); if no partner is left in it, delete it.
    pub fn save(&self, changed: &str) -> Result<()> {
        let file = match (self.partners.get(changed), self.removed.get(changed)) {
            (Some(p), _) => &p.file,
            (None, Some(f)) => f,
            (None, None) => bail!("no partner named {changed:?} to save"),
        };
        let raw = RawFile {
            partner: self
                .partners
                .values()
                .filter(|p| &p.file == file)
                .map(|p| RawPartner {
                    name: p.name.clone(),
                    prefixes: p.prefixes.iter().map(|n| n.to_string()).collect(),
                    spf: p.spf.clone(),
                    note: p.note.clone(),
                    expires: p.expires.map(|d| toml::Value::String(d.to_string())),
                    allow_short_prefixes: p.allow_short,
                })
                .collect(),
        };
        if raw.partner.is_empty() {
            fsutil::remove_durable(file)?;
            return Ok(());
        }
        let body = toml::to_string(&raw)
            .map_err(|e| anyhow!("{}: cannot serialize partners: {e}", file_label(file)))?;
        let text = format!(
            "# Partner store file, written by `mx6gate partner add/remove`.\n# Comments here are not kept when mx6gate rewrites this file.\n\n{body}"
        );
        // What we write must read back as what we hold.
        let check: RawFile = toml::from_str(&text).map_err(|e| {
            anyhow!(
                "{}: internal error, output does not parse: {e}",
                file_label(file)
            )
        })?;
        if check.partner.len() != raw.partner.len() {
            bail!(
                "{}: internal error, output does not read back",
                file_label(file)
            );
        }
        fsutil::write_atomic(file, text.as_bytes())
    }
}

//! Edits in memory (`partner add`, `partner remove`): each validated
//! whole, changing nothing on error; [`Store::save`] writes the result.
use super::*;

impl Store {
    /// Add a new partner, or more prefixes to an existing one (its note and
    /// expiry are replaced when given; an empty note clears it).
    /// `allow_short` (`--allow-short-prefix`) lets prefixes shorter than
    /// [`SHORTEST_PREFIX`] in, and is remembered for the partner. In memory
    /// only: validated whole, and on error nothing changes. Returns notices
    /// for the operator (normalized prefixes, prefixes already present…).
    pub fn add(
        &mut self,
        name: &str,
        prefixes: &[String],
        note: Option<String>,
        expires: Option<String>,
        allow_short: bool,
    ) -> Result<Vec<String>> {
        self.add_with_spf(name, prefixes, &[], note, expires, allow_short)
    }

    /// [`Store::add`], with SPF domains (`--spf`) too: each a domain name,
    /// named by no other partner. Whether the domain publishes a usable
    /// record is the caller's to check (it takes DNS): see `partners::add`.
    pub fn add_with_spf(
        &mut self,
        name: &str,
        prefixes: &[String],
        spf: &[String],
        note: Option<String>,
        expires: Option<String>,
        allow_short: bool,
    ) -> Result<Vec<String>> {
        validate_name(name)?;
        let mut notices = Vec::new();
        let expires = match expires {
            None => None,
            Some(s) => {
                let d = parse_date(s.trim())?;
                let today = today_utc();
                if d < today {
                    bail!("expires: {d} is in the past (today is {today} UTC)");
                }
                Some(d)
            }
        };
        let existing = self.partners.get(name);
        if prefixes.is_empty()
            && spf.is_empty()
            && (existing.is_none() || (note.is_none() && expires.is_none()))
        {
            bail!("partner {name:?}: give at least one prefix or --spf domain");
        }
        let mut new_domains: Vec<String> = Vec::new();
        for input in spf {
            let d = parse_spf_domain(input).map_err(|e| anyhow!("partner {name:?}: {e}"))?;
            if let Some(owner) = self.partners.values().find(|p| p.spf.contains(&d)) {
                if owner.name != name {
                    bail!(
                        "spf domain {d} is already named by partner {:?} ({}); remove it there first",
                        owner.name,
                        file_label(&owner.file)
                    );
                }
                notices.push(format!(
                    "spf domain {d} is already in partner {name:?}; unchanged"
                ));
                continue;
            }
            if new_domains.contains(&d) {
                notices.push(format!(
                    "spf domain {d} is given more than once; stored once"
                ));
                continue;
            }
            new_domains.push(d);
        }
        let allow_short = allow_short || existing.is_some_and(|p| p.allow_short);
        // Built once: looking each prefix up in every partner's list would
        // make adding n prefixes to a big store quadratic.
        let owners = self.owners();
        let mut new_nets: Vec<Ipv6Net> = Vec::new();
        let mut seen: HashSet<Ipv6Net> = HashSet::new();
        for input in prefixes {
            let (net, notice) = parse_cli_prefix(input, allow_short)
                .map_err(|e| anyhow!("partner {name:?}: {e}"))?;
            notices.extend(notice);
            if let Some(owner) = owners.get(&net) {
                if owner.name != name {
                    bail!(
                        "prefix {net} is already allowed for partner {:?} ({}); remove it there first",
                        owner.name,
                        file_label(&owner.file)
                    );
                }
                notices.push(format!("{net} is already in partner {name:?}; unchanged"));
                continue;
            }
            if !seen.insert(net) {
                notices.push(format!("{net} is given more than once; stored once"));
                continue;
            }
            new_nets.push(net);
        }
        let short_added = new_nets.iter().any(|n| n.prefix_len() < SHORTEST_PREFIX);
        drop(owners);

        // Everything is valid: apply.
        let note = note.map(|n| n.trim().to_string());
        match self.partners.get_mut(name) {
            Some(p) => {
                p.prefixes.extend(new_nets);
                p.spf.extend(new_domains);
                p.allow_short |= short_added;
                if let Some(n) = note {
                    p.note = (!n.is_empty()).then_some(n);
                }
                if expires.is_some() {
                    p.expires = expires;
                }
                if !p.is_active(today_utc()) {
                    notices.push(format!(
                        "partner {name:?} expired on {}; its prefixes stay out of the allowlist until --expires gives a later date",
                        p.expires.expect("inactive means expires is set")
                    ));
                }
                let own_file = self.dir.join(format!("{name}.toml"));
                if p.file != own_file {
                    notices.push(format!(
                        "partner {name:?} is defined in {}; that file is rewritten (comments in it are not kept)",
                        file_label(&p.file)
                    ));
                }
            }
            None => {
                let file = self
                    .removed
                    .remove(name)
                    .unwrap_or_else(|| self.dir.join(format!("{name}.toml")));
                self.partners.insert(
                    name.to_string(),
                    Partner {
                        name: name.to_string(),
                        prefixes: new_nets,
                        spf: new_domains,
                        note: note.filter(|n| !n.is_empty()),
                        expires,
                        allow_short: short_added,
                        file,
                    },
                );
            }
        }
        Ok(notices)
    }

    /// Remove prefixes from a partner, or the whole partner when `prefixes`
    /// is empty; removing its last prefix removes the partner. In memory
    /// only: validated whole, and on error nothing changes.
    pub fn remove(&mut self, name: &str, prefixes: &[String]) -> Result<()> {
        self.remove_items(name, prefixes, &[])
    }

    /// [`Store::remove`] with SPF domains: the named prefixes and domains
    /// go; with neither named, the whole partner; a partner left with
    /// neither prefix nor domain goes too.
    pub fn remove_items(&mut self, name: &str, prefixes: &[String], spf: &[String]) -> Result<()> {
        let Some(p) = self.partners.get(name) else {
            bail!("no partner named {name:?} (see `mx6gate partner list`)");
        };
        let held: HashSet<&Ipv6Net> = p.prefixes.iter().collect();
        let mut drop: HashSet<Ipv6Net> = HashSet::new();
        for input in prefixes {
            let net = parse_any_prefix(input).map_err(|e| anyhow!("partner {name:?}: {e}"))?;
            if !held.contains(&net) {
                let elsewhere = self
                    .owner_of(&net)
                    .map(|o| format!(" (it belongs to partner {:?})", o.name))
                    .unwrap_or_default();
                bail!("partner {name:?} has no prefix {net}{elsewhere}");
            }
            drop.insert(net);
        }
        let mut drop_domains: Vec<String> = Vec::new();
        for input in spf {
            let d = parse_spf_domain(input).map_err(|e| anyhow!("partner {name:?}: {e}"))?;
            if !p.spf.contains(&d) {
                bail!("partner {name:?} names no spf domain {d}");
            }
            drop_domains.push(d);
        }
        let p = self.partners.get_mut(name).expect("checked above");
        p.prefixes.retain(|n| !drop.contains(n));
        p.spf.retain(|d| !drop_domains.contains(d));
        if (prefixes.is_empty() && spf.is_empty()) || (p.prefixes.is_empty() && p.spf.is_empty()) {
            let p = self.partners.remove(name).expect("checked above");
            self.removed.insert(p.name, p.file);
        }
        Ok(())
    }
}

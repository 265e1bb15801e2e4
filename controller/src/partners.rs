//! Partner edits as one transaction each, for the CLI (and anything else
//! that edits the store): reconcile first (heal an interrupted command),
//! change the store in memory (validated whole), check the result fits
//! the maps, save it atomically, apply it; if the map update fails the
//! partner's file is put back, so store and maps never disagree
//! (invariants 5 and 6).
//!
//! Partners by domain: [`add`] expands each new `--spf` domain once, right
//! away, through the configured resolver, and refuses (changing nothing)
//! a domain that has no usable SPF record or whose DNS does not answer;
//! the first good expansion is recorded in the SPF state, so the reconcile
//! that ends the edit applies it at once. [`refresh`] and [`accept`] are
//! `mx6gate partner refresh NAME [--accept]`.
use std::fs;

use anyhow::{anyhow, bail, Context, Result};
use chrono::Utc;

use crate::{
    context::Ctx,
    maps::GateMaps,
    pinlock,
    reconcile::{self, SyncReport},
    spf::{self, Decision, Diff, Expansion, SpfDns, SpfError, SpfState},
    store::{today_utc, Store},
};

/// What an edit did besides its own change.
#[derive(Debug, Default)]
pub struct Applied {
    /// A gate was loaded and its maps now match the store.
    pub loaded: bool,
    /// The maps did not match the store before the edit and were brought
    /// in step first (an earlier command interrupted?).
    pub healed: Option<SyncReport>,
}

/// What `partner add` asks.
#[derive(Debug, Default, Clone)]
pub struct AddRequest {
    pub name: String,
    pub prefixes: Vec<String>,
    pub spf: Vec<String>,
    pub note: Option<String>,
    pub expires: Option<String>,
    pub allow_short: bool,
}

/// What `partner add` did.
#[derive(Debug)]
pub struct Added {
    pub existed: bool,
    pub notices: Vec<String>,
    /// Each new SPF domain and what its first expansion enforces.
    pub spf: Vec<(String, Vec<spf::SpfPrefix>)>,
    pub store: Store,
    pub applied: Applied,
}

/// The gate's maps, if one is loaded and no other config's daemon owns it.
fn open_maps(ctx: &Ctx) -> Result<Option<GateMaps>> {
    pinlock::refuse_foreign_owner(&ctx.cfg.pin_path, &ctx.state)?;
    GateMaps::open_if_loaded(&ctx.cfg.pin_path)
}

/// Bring the maps in step with `store` as it is on disk, before an edit.
/// A store that looks vanished refuses the edit (`reconcile::refuse_vacant`).
fn heal(ctx: &Ctx, store: &Store, maps: Option<&mut GateMaps>) -> Result<Option<SyncReport>> {
    let Some(maps) = maps else { return Ok(None) };
    let report = reconcile::reconcile(store, &ctx.state, maps, today_utc(), false)
        .context("bringing the allowlist in step with the store before the edit")?;
    Ok((!report.is_noop()).then_some(report))
}

/// Persist the edit of partner `name`, then make the maps match the whole
/// store. Returns whether a gate was loaded.
fn commit(ctx: &Ctx, store: &Store, name: &str, maps: Option<&mut GateMaps>) -> Result<bool> {
    let today = today_utc();
    let Some(maps) = maps else {
        store.save(name)?;
        return Ok(false);
    };
    // Capacity and ids are checked before anything is written.
    let desired = reconcile::desired_allow(store, &ctx.state, maps, today)?;
    let file = store.file_of(name);
    let previous = fs::read(&file).ok();
    store.save(name)?;
    if let Err(e) = reconcile::apply_allow_tracked(maps, &ctx.state, &desired) {
        // Put the store back as it was and the map with it.
        match previous {
            Some(bytes) => crate::fsutil::write_atomic(&file, &bytes)?,
            None => {
                fs::remove_file(&file).ok();
            }
        }
        let old = Store::load_or_new(&ctx.cfg.partners_dir)?;
        reconcile::reconcile(&old, &ctx.state, maps, today, true)
            .context("restoring the ALLOW map after a failed update")?;
        return Err(e.context("updating the ALLOW map; the store was left unchanged"));
    }
    Ok(true)
}

/// One edit transaction under the state lock: `change` edits the store
/// in memory (and may record SPF state); then commit.
/// `healed` hears at once when the maps had to be brought in step first
/// (an earlier command interrupted?), even if the change is then refused:
/// the healing stands either way.
fn edit<T>(
    ctx: &Ctx,
    name: &str,
    create: bool,
    healed: &mut dyn FnMut(&SyncReport),
    change: impl FnOnce(&mut Store) -> Result<T>,
) -> Result<(Store, T, Applied)> {
    let _lock = ctx.state.lock()?;
    let mut maps = open_maps(ctx)?;
    // A missing directory is a new store (this edit creates it), unless
    // the gate holds partners that must have been there.
    let mut store = if create {
        Store::load_or_new(&ctx.cfg.partners_dir)?
    } else {
        Store::load(&ctx.cfg.partners_dir)?
    };
    let healed_report = heal(ctx, &store, maps.as_mut())?;
    if let Some(r) = &healed_report {
        healed(r);
    }
    let out = change(&mut store)?;
    let loaded = commit(ctx, &store, name, maps.as_mut())?;
    Ok((
        store,
        out,
        Applied {
            loaded,
            healed: healed_report,
        },
    ))
}

/// Expand `domain` through `dns` (the walk's own time limit bounds it).
pub async fn expand_domain<D: SpfDns>(dns: &D, domain: &str) -> Result<Expansion, SpfError> {
    spf::expand(dns, domain, &spf::Limits::default()).await
}

/// Run `fut` to completion on a runtime of its own (the CLI has none).
fn block_on<F: std::future::Future>(fut: F) -> Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the DNS runtime")?;
    Ok(rt.block_on(fut))
}

/// Expand each of `domains` in turn through the configured resolver, on a
/// runtime of the CLI's own. `no_resolver_tail` ends the error when there
/// is no resolver (what the caller has, or has not, changed by then).
fn expand_each(
    ctx: &Ctx,
    domains: &[String],
    no_resolver_tail: &str,
) -> Result<Vec<(String, Result<Expansion, SpfError>)>> {
    let dns = ctx
        .cfg
        .spf
        .resolver()
        .map_err(|e| anyhow!("spf: no resolver: {}{no_resolver_tail}", e.0))?;
    block_on(async {
        let mut v = Vec::new();
        for d in domains {
            v.push((d.clone(), expand_domain(&dns, d).await));
        }
        v
    })
}

/// Why `partner add --spf DOMAIN` refuses the domain, if it does: it has
/// no usable SPF record, or DNS did not answer, or the walk was partial.
fn first_expansion(domain: &str, result: Result<Expansion, SpfError>) -> Result<Decision> {
    match spf::decide(None, result, &spf::Policy::default()) {
        Decision::Keep { error } if error.is_transient() => bail!(
            "spf domain {domain}: DNS did not answer ({error}); nothing was changed — try again when DNS answers"
        ),
        Decision::Keep { error } => bail!("spf domain {domain}: {error}; nothing was changed"),
        Decision::Hold {
            reason: spf::HoldReason::Partial { problems },
            ..
        } => {
            let p: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
            bail!(
                "spf domain {domain}: the record cannot be expanded whole: {}; nothing was changed",
                p.join("; ")
            )
        }
        d => Ok(d),
    }
}

/// `mx6gate partner add`: validated whole (names, prefixes, domains) before
/// DNS is asked; each new SPF domain expanded once (outside the state
/// lock: a slow DNS server holds up nobody else); then one transaction.
pub fn add(ctx: &Ctx, req: &AddRequest, healed: &mut dyn FnMut(&SyncReport)) -> Result<Added> {
    // Dry run on the store as it is: bad input is refused before DNS.
    let mut trial = Store::load_or_new(&ctx.cfg.partners_dir)?;
    let before_spf: Vec<String> = trial
        .partners
        .get(&req.name)
        .map(|p| p.spf.clone())
        .unwrap_or_default();
    trial.add_with_spf(
        &req.name,
        &req.prefixes,
        &req.spf,
        req.note.clone(),
        req.expires.clone(),
        req.allow_short,
    )?;
    let new_domains: Vec<String> = trial.partners[&req.name]
        .spf
        .iter()
        .filter(|d| !before_spf.contains(d))
        .cloned()
        .collect();
    let mut first: Vec<(String, Decision)> = Vec::new();
    if !new_domains.is_empty() {
        for (d, r) in expand_each(ctx, &new_domains, "; nothing was changed")? {
            let decision = first_expansion(&d, r)?;
            first.push((d, decision));
        }
    }
    let name = req.name.clone();
    let (store, (existed, notices), applied) = edit(ctx, &name, true, healed, |store| {
        let existed = store.partners.contains_key(&req.name);
        let notices = store.add_with_spf(
            &req.name,
            &req.prefixes,
            &req.spf,
            req.note.clone(),
            req.expires.clone(),
            req.allow_short,
        )?;
        if !first.is_empty() {
            let mut state = SpfState::load(&ctx.state.path)?;
            let now = Utc::now();
            for (d, decision) in &first {
                state.record(d, decision, now);
            }
            state.save(&ctx.state.path)?;
        }
        Ok((existed, notices))
    })?;
    let spf = first
        .into_iter()
        .map(|(d, decision)| match decision {
            Decision::Apply { prefixes, .. } => (d, prefixes),
            _ => (d, Vec::new()),
        })
        .collect();
    Ok(Added {
        existed,
        notices,
        spf,
        store,
        applied,
    })
}

/// `mx6gate partner remove NAME [PREFIX…] [--spf DOMAIN…]`.
pub fn remove(
    ctx: &Ctx,
    name: &str,
    prefixes: &[String],
    spf_domains: &[String],
    healed: &mut dyn FnMut(&SyncReport),
) -> Result<(Store, Applied)> {
    let (store, (), applied) = edit(ctx, name, false, healed, |store| {
        store.remove_items(name, prefixes, spf_domains)
    })?;
    Ok((store, applied))
}

/// The maps made to match the store and the SPF state now, if a gate is
/// loaded (after an SPF state change). Returns whether one was.
pub fn reconcile_now(ctx: &Ctx) -> Result<bool> {
    let _lock = ctx.state.lock()?;
    let Some(mut maps) = open_maps(ctx)? else {
        return Ok(false);
    };
    let store = Store::load(&ctx.cfg.partners_dir)?;
    reconcile::reconcile(&store, &ctx.state, &mut maps, today_utc(), false)?;
    Ok(true)
}

/// One domain's refresh, as recorded.
#[derive(Debug)]
pub struct Refreshed {
    pub domain: String,
    pub decision: Decision,
    /// Failures in a row (0 when this one got an answer).
    pub failures: u32,
}

impl Refreshed {
    /// Whether the enforced set changed (the maps must follow).
    pub fn changes_enforcement(&self) -> bool {
        matches!(&self.decision, Decision::Apply { diff, .. } if !diff.is_empty())
    }
}

/// Record the result of expanding `domain` in the SPF state, under the
/// state lock: decided against the enforced set (held when it shrinks
/// sharply, kept when the walk failed). The daemon's refresh task and
/// `partner refresh` both end here.
pub fn record_refresh(
    ctx_state: &crate::state::StateDir,
    domain: &str,
    result: Result<Expansion, SpfError>,
) -> Result<Refreshed> {
    let _lock = ctx_state.lock()?;
    let mut state = SpfState::load(&ctx_state.path)?;
    let last_good = state
        .domain
        .get(domain)
        .and_then(|d| d.last_good.as_ref())
        .map(|g| g.prefixes.clone());
    let decision = spf::decide(last_good.as_deref(), result, &spf::Policy::default());
    let now = Utc::now();
    let failures = match &decision {
        Decision::Keep { error } => state.note_failure(domain, &error.to_string(), now),
        _ => 0,
    };
    let changed = state.record(domain, &decision, now) || failures > 0;
    if changed {
        state.save(&ctx_state.path)?;
    }
    Ok(Refreshed {
        domain: domain.to_string(),
        decision,
        failures,
    })
}

/// Drop the SPF state of domains no partner names any more (`owners`: a
/// store just loaded, under the state lock the caller holds, so an edit in
/// progress is seen whole). Returns the domains dropped.
pub fn forget_unnamed_domains(
    state: &crate::state::StateDir,
    owners: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<String>> {
    let mut s = SpfState::load(&state.path)?;
    let gone: Vec<String> = s
        .domain
        .keys()
        .filter(|d| !owners.contains_key(*d))
        .cloned()
        .collect();
    if !gone.is_empty() {
        let keep = owners.keys().cloned().collect();
        s.retain_domains(&keep);
        s.save(&state.path)?;
    }
    Ok(gone)
}

/// The SPF domains of partner `name` (an error naming it when it has none).
fn domains_of(ctx: &Ctx, name: &str) -> Result<Vec<String>> {
    let store = Store::load(&ctx.cfg.partners_dir)?;
    let Some(p) = store.partners.get(name) else {
        bail!("no partner named {name:?} (see `mx6gate partner list`)");
    };
    if p.spf.is_empty() {
        bail!("partner {name:?} names no spf domain (nothing to refresh)");
    }
    Ok(p.spf.clone())
}

/// `mx6gate partner refresh NAME`: expand each of its domains now, record
/// each result (held and kept sets as the daemon would), then reconcile.
pub fn refresh(ctx: &Ctx, name: &str) -> Result<(Vec<Refreshed>, bool)> {
    let domains = domains_of(ctx, name)?;
    let mut out = Vec::new();
    for (d, r) in expand_each(ctx, &domains, "")? {
        out.push(record_refresh(&ctx.state, &d, r)?);
    }
    let loaded = reconcile_now(ctx)?;
    Ok((out, loaded))
}

/// `mx6gate partner refresh NAME --accept`: every held set of the
/// partner's domains becomes enforced; then reconcile. An error when none
/// is held.
pub fn accept(ctx: &Ctx, name: &str) -> Result<(Vec<(String, Diff)>, bool)> {
    let domains = domains_of(ctx, name)?;
    let accepted = {
        let _lock = ctx.state.lock()?;
        let mut state = SpfState::load(&ctx.state.path)?;
        let now = Utc::now();
        let mut accepted = Vec::new();
        for d in &domains {
            if state.domain.get(d).is_some_and(|s| s.held.is_some()) {
                let diff = state.accept(d, now).map_err(|e| anyhow!(e))?;
                accepted.push((d.clone(), diff));
            }
        }
        if accepted.is_empty() {
            bail!(
                "partner {name:?}: none of its spf domains ({}) has a held set to accept",
                domains.join(", ")
            );
        }
        state.save(&ctx.state.path)?;
        accepted
    };
    let loaded = reconcile_now(ctx)?;
    Ok((accepted, loaded))
}

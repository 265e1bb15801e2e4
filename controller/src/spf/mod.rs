//! Partners by domain: a domain's SPF record (RFC 7208) expanded into the
//! IPv6 prefixes it vouches for, and the rules that keep a refresh from
//! ever turning the gate against a partner.
//!
//! - [`record`] — one SPF record parsed into its terms (errors name the term)
//! - [`domain`] — domain names as SPF looks them up
//! - [`dns`]    — the TXT/AAAA/MX questions, with TTLs, over hickory-resolver
//! - [`mod@expand`] — the walk: includes, redirect, a/mx → AAAA, limits, origins
//! - [`refresh`] — pure refresh safety: diff, hold, refuse, schedule
//! - [`state`]  — the last good sets, persisted in the state directory
//! - [`suggest`] — for `top --suggest`: a PTR-parent domain whose SPF covers a source
//!
//! One refresh of one domain, as the daemon will run it:
//!
//! ```text
//! let result = expand(&dns, domain, &Limits::default()).await;
//! let decision = decide(Some(state.enforced(domain)), result, &Policy::default());
//! if state.record(domain, &decision, Utc::now()) { state.save(state_dir)? }
//! // Apply → sync the maps, log the diff; Hold/Keep → log why; the maps keep
//! // the last good set. Next: next_refresh(ttl) or retry_after(failures).
//! ```
//!
//! ## Why our own parser
//!
//! Evaluated (December 2026) against what the walk needs — the parsed terms
//! with their CIDR lengths, macro strings kept as written, errors that name
//! the term, and the DNS walk in our hands so it sees TTLs:
//! - **mail-auth** (Stalwart; Apache-2.0 OR MIT; maintained): a sound parser
//!   whose `SpfRecord` is public, but its parse error is a bare
//!   `Error::ParseError` (no term to show the operator), it keeps masks
//!   rather than lengths, and it brings a DKIM/ARC/DMARC stack (RSA,
//!   ed25519, mail-parser, a second hickory-resolver major version) for a
//!   grammar of one page. Its own evaluator answers pass/fail for one
//!   address and hides TTLs.
//! - **decon-spf** (MIT): regex-based (its own source calls the `a`/`mx`
//!   patterns faulty); `a`/`mx` arguments come back as one unparsed string
//!   (domain and CIDR lengths together); macros are not parsed.
//! - **mailrs-spf** (Apache-2.0 OR MIT): three major versions within a
//!   year, and a record holding `ptr` is refused whole — we must report
//!   `ptr` by name and keep the rest.
//! - **viaspf**: GPL-3.0-or-later, out for an MIT/Apache project.
//!
//! So [`record`] implements RFC 7208 §12's grammar (some 450 lines with
//! its docs; unit tests per rule, property tests against panics) and
//! [`expand()`] walks DNS through the resolver the project already uses.
pub mod config;
pub mod dns;
pub mod domain;
pub mod error;
pub mod expand;
pub mod record;
pub mod refresh;
pub mod state;
pub mod suggest;

pub use config::SpfConfig;
pub use dns::{HickoryDns, SpfDns};
pub use error::SpfError;
pub use expand::{covering, expand, Expansion, Limits, SkipReason, Skipped, SpfPrefix};
pub use refresh::{decide, Bounds, Decision, Diff, HoldReason, Policy, MIN_PREFIX_LEN};
pub use state::SpfState;

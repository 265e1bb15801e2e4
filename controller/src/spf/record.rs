//! One SPF record (RFC 7208 §4.5, §12) parsed into its terms.
//!
//! The whole record is checked — RFC 7208 §4.6: a syntax error anywhere
//! makes the record a permerror — and the error names the term. What the
//! gate never uses is still parsed, so a record is refused for the same
//! reasons a receiver's SPF check would refuse it: `ip4:` networks and
//! IPv4 CIDR lengths are validated and then dropped (IPv4 is never gated),
//! `exp=` and unknown modifiers are validated and ignored.
use std::{fmt, net::Ipv6Addr, str::FromStr};

use ipnet::{Ipv4Net, Ipv6Net};

/// The version tag every SPF record starts with.
const VERSION: &str = "v=spf1";

/// A directive's qualifier (RFC 7208 §4.6.2). Only `Pass` terms describe
/// senders the domain vouches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qualifier {
    Pass,
    Fail,
    SoftFail,
    Neutral,
}

/// A `domain-spec`: a name that may hold macros (RFC 7208 §7), kept as
/// written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSpec(String);

impl DomainSpec {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The macro letters used (`%{i}` → `i`), in order, without repeats.
    /// Escapes (`%%`, `%_`, `%-`) are not macros.
    pub fn macro_letters(&self) -> String {
        let mut letters = String::new();
        let b = self.0.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && b.get(i + 1) == Some(&b'{') {
                if let Some(&l) = b.get(i + 2) {
                    let l = (l as char).to_ascii_lowercase();
                    if !letters.contains(l) {
                        letters.push(l);
                    }
                }
                i += 2;
            } else if b[i] == b'%' {
                i += 2;
            } else {
                i += 1;
            }
        }
        letters
    }

    /// The name itself, when it holds no `%` at all (no macro and no
    /// escape) and so can be looked up without a connection to evaluate.
    pub fn literal(&self) -> Option<&str> {
        (!self.0.contains('%')).then_some(self.0.as_str())
    }
}

impl fmt::Display for DomainSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A mechanism (RFC 7208 §5), reduced to what an IPv6 allowlist needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mechanism {
    All,
    Include(DomainSpec),
    /// `a[:domain][/ip4-cidr][//ip6-cidr]`: the AAAA records of `domain`
    /// (the current domain when absent), each widened to `/cidr6`.
    A {
        domain: Option<DomainSpec>,
        cidr6: u8,
    },
    /// `mx[...]`: the AAAA records of the domain's MX hosts, each `/cidr6`.
    Mx {
        domain: Option<DomainSpec>,
        cidr6: u8,
    },
    Ptr(Option<DomainSpec>),
    Ip4(Ipv4Net),
    Ip6(Ipv6Net),
    Exists(DomainSpec),
}

impl Mechanism {
    /// Whether evaluating it costs a DNS query (RFC 7208 §4.6.4): these
    /// count towards the limit of 10.
    pub fn queries_dns(&self) -> bool {
        matches!(
            self,
            Mechanism::Include(_)
                | Mechanism::A { .. }
                | Mechanism::Mx { .. }
                | Mechanism::Ptr(_)
                | Mechanism::Exists(_)
        )
    }
}

/// A qualifier and a mechanism, with the term as the record wrote it (for
/// origins and messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub qualifier: Qualifier,
    pub mechanism: Mechanism,
    pub text: String,
}

/// A parsed record. Directives after `all` are kept (they were checked)
/// but receivers never reach them (RFC 7208 §5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub directives: Vec<Directive>,
    /// `redirect=` and the term as written.
    pub redirect: Option<(DomainSpec, String)>,
}

impl Record {
    /// The directives a receiver evaluates: up to and including `all`.
    pub fn evaluated(&self) -> &[Directive] {
        match self
            .directives
            .iter()
            .position(|d| d.mechanism == Mechanism::All)
        {
            Some(i) => &self.directives[..=i],
            None => &self.directives,
        }
    }

    /// The redirect a receiver follows: none when the record has `all`
    /// (RFC 7208 §6.1).
    pub fn effective_redirect(&self) -> Option<&(DomainSpec, String)> {
        if self
            .directives
            .iter()
            .any(|d| d.mechanism == Mechanism::All)
        {
            None
        } else {
            self.redirect.as_ref()
        }
    }
}

/// Why a record is not valid SPF: the offending term (None for the version
/// or the record as a whole) and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    pub term: Option<String>,
    pub reason: String,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.term {
            Some(t) => write!(f, "term {t:?}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

impl std::error::Error for RecordError {}

/// Whether a TXT string is an SPF version 1 record (RFC 7208 §4.5): `v=spf1`
/// (any case) followed by a space or nothing. `v=spf10` is not.
pub fn is_spf1(txt: &str) -> bool {
    let b = txt.as_bytes();
    b.len() >= VERSION.len()
        && b[..VERSION.len()].eq_ignore_ascii_case(VERSION.as_bytes())
        && (b.len() == VERSION.len() || b[VERSION.len()] == b' ')
}

impl FromStr for Record {
    type Err = RecordError;

    fn from_str(txt: &str) -> Result<Record, RecordError> {
        if !is_spf1(txt) {
            return Err(RecordError {
                term: None,
                reason: format!("does not start with {VERSION:?}"),
            });
        }
        let mut record = Record {
            directives: Vec::new(),
            redirect: None,
        };
        let mut exp_seen = false;
        for term in txt[VERSION.len()..].split(' ').filter(|t| !t.is_empty()) {
            let bad = |reason: String| RecordError {
                term: Some(term.to_string()),
                reason,
            };
            match modifier_name(term) {
                Some(name) => {
                    let value = &term[name.len() + 1..];
                    let lower = name.to_ascii_lowercase();
                    if lower == "redirect" || lower == "exp" {
                        let spec = domain_spec(value).map_err(bad)?;
                        let seen = if lower == "redirect" {
                            record.redirect.is_some()
                        } else {
                            exp_seen
                        };
                        if seen {
                            return Err(bad(format!(
                                "a second {lower}= modifier (RFC 7208 §6 allows one)"
                            )));
                        }
                        if lower == "redirect" {
                            record.redirect = Some((spec, term.to_string()));
                        } else {
                            exp_seen = true;
                        }
                    } else {
                        // Unknown modifiers are ignored (RFC 7208 §6) once
                        // their value is a valid macro-string.
                        macro_string(value, true).map_err(bad)?;
                    }
                }
                None => record.directives.push(directive(term).map_err(bad)?),
            }
        }
        Ok(record)
    }
}

/// `name` when the term is a modifier `name=value` (RFC 7208 §4.6.1):
/// ALPHA *( ALPHA / DIGIT / "-" / "_" / "." ) followed by "=".
fn modifier_name(term: &str) -> Option<&str> {
    let end = term
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .unwrap_or(term.len());
    let name = &term[..end];
    (term[end..].starts_with('=') && name.starts_with(|c: char| c.is_ascii_alphabetic()))
        .then_some(name)
}

fn directive(term: &str) -> Result<Directive, String> {
    let (qualifier, rest) = match term.as_bytes()[0] {
        b'+' => (Qualifier::Pass, &term[1..]),
        b'-' => (Qualifier::Fail, &term[1..]),
        b'~' => (Qualifier::SoftFail, &term[1..]),
        b'?' => (Qualifier::Neutral, &term[1..]),
        _ => (Qualifier::Pass, term),
    };
    let name_end = rest
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(rest.len());
    let (name, arg) = rest.split_at(name_end);
    let mechanism = match name.to_ascii_lowercase().as_str() {
        "all" => {
            if !arg.is_empty() {
                return Err("\"all\" takes no argument".into());
            }
            Mechanism::All
        }
        "include" => Mechanism::Include(domain_spec(required_arg(arg, "include")?)?),
        "exists" => Mechanism::Exists(domain_spec(required_arg(arg, "exists")?)?),
        "ptr" => Mechanism::Ptr(match arg {
            "" => None,
            _ => Some(domain_spec(required_arg(arg, "ptr")?)?),
        }),
        m @ ("a" | "mx") => {
            let (domain, cidr) = split_domain_cidr(arg, m)?;
            let domain = domain.map(domain_spec).transpose()?;
            let cidr6 = dual_cidr(cidr)?;
            if m == "a" {
                Mechanism::A { domain, cidr6 }
            } else {
                Mechanism::Mx { domain, cidr6 }
            }
        }
        "ip4" => {
            let arg = required_arg(arg, "ip4")?;
            let (addr, len) = split_cidr(arg, 32)?;
            let addr = addr
                .parse()
                .map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
            Mechanism::Ip4(Ipv4Net::new(addr, len).expect("length checked").trunc())
        }
        "ip6" => {
            let arg = required_arg(arg, "ip6")?;
            let (addr, len) = split_cidr(arg, 128)?;
            let addr: Ipv6Addr = addr
                .parse()
                .map_err(|_| format!("{addr:?} is not an IPv6 address"))?;
            // Host bits beyond the length are ignored, as receivers compare
            // under the mask (RFC 7208 §5.6).
            Mechanism::Ip6(Ipv6Net::new(addr, len).expect("length checked").trunc())
        }
        "" => return Err("no mechanism name".into()),
        other => return Err(format!("unknown mechanism {other:?}")),
    };
    Ok(Directive {
        qualifier,
        mechanism,
        text: term.to_string(),
    })
}

fn required_arg<'a>(arg: &'a str, name: &str) -> Result<&'a str, String> {
    match arg.strip_prefix(':') {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(format!("\"{name}\" needs \":<value>\"")),
    }
}

/// `a`/`mx` argument: `[:domain-spec][dual-cidr]`. The domain ends at the
/// first `/` outside a macro's braces (a macro may use `/` as a delimiter).
fn split_domain_cidr<'a>(arg: &'a str, name: &str) -> Result<(Option<&'a str>, &'a str), String> {
    if arg.is_empty() || arg.starts_with('/') {
        return Ok((None, arg));
    }
    let Some(rest) = arg.strip_prefix(':') else {
        return Err(format!(
            "unknown mechanism (\"{name}\" followed by {arg:?})"
        ));
    };
    let mut depth = 0u32;
    for (i, c) in rest.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            '/' if depth == 0 => return Ok((Some(&rest[..i]), &rest[i..])),
            _ => {}
        }
    }
    Ok((Some(rest), ""))
}

/// `dual-cidr-length = [ ip4-cidr-length ] [ "/" ip6-cidr-length ]`; returns
/// the IPv6 length (128 when absent). The IPv4 length is checked, not kept.
fn dual_cidr(s: &str) -> Result<u8, String> {
    if s.is_empty() {
        return Ok(128);
    }
    if let Some(v6) = s.strip_prefix("//") {
        return cidr_len(v6, 128);
    }
    let Some(rest) = s.strip_prefix('/') else {
        return Err(format!("bad CIDR length {s:?}"));
    };
    match rest.split_once("//") {
        Some((v4, v6)) => {
            cidr_len(v4, 32)?;
            cidr_len(v6, 128)
        }
        None => {
            cidr_len(rest, 32)?;
            Ok(128)
        }
    }
}

/// `addr[/len]` with `len` ≤ `max` (default `max`).
fn split_cidr(s: &str, max: u8) -> Result<(&str, u8), String> {
    match s.split_once('/') {
        Some((addr, len)) => Ok((addr, cidr_len(len, max)?)),
        None => Ok((s, max)),
    }
}

/// A CIDR length as RFC 7208's grammar writes it: "0", or no leading zero.
fn cidr_len(s: &str, max: u8) -> Result<u8, String> {
    let ok_digits = !s.is_empty()
        && s.len() <= 3
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    match s.parse::<u16>() {
        Ok(n) if ok_digits && n <= u16::from(max) => Ok(n as u8),
        _ => Err(format!("bad CIDR length {s:?} (0-{max})")),
    }
}

/// `domain-spec = macro-string domain-end`, `domain-end = ( "." toplabel
/// [ "." ] ) / macro-expand`.
fn domain_spec(s: &str) -> Result<DomainSpec, String> {
    if s.is_empty() {
        return Err("empty domain".into());
    }
    let ends_in_macro = macro_string(s, false)?;
    if !ends_in_macro {
        let body = s.strip_suffix('.').unwrap_or(s);
        let Some((_, top)) = body.rsplit_once('.') else {
            return Err(format!("{s:?} is not a multi-label domain name"));
        };
        if !is_toplabel(top) {
            return Err(format!("{s:?} does not end in a valid top label"));
        }
    }
    Ok(DomainSpec(s.to_string()))
}

/// `toplabel = ( *alphanum ALPHA *alphanum ) / ( 1*alphanum "-" *( alphanum
/// / "-" ) alphanum )`.
fn is_toplabel(l: &str) -> bool {
    !l.is_empty()
        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !l.starts_with('-')
        && !l.ends_with('-')
        && (l.bytes().any(|b| b.is_ascii_alphabetic()) || l.contains('-'))
}

/// Check a macro-string; returns whether it ends with a macro-expand.
/// `exp_letters` allows `c`, `r`, `t`, which are only for explanations
/// (RFC 7208 §7.2) — and unknown modifiers, whose values receivers never
/// expand.
fn macro_string(s: &str, exp_letters: bool) -> Result<bool, String> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut ends_in_macro = false;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            match b.get(i + 1) {
                Some(b'%' | b'_' | b'-') => i += 2,
                Some(b'{') => {
                    let Some(close) = s[i..].find('}') else {
                        return Err(format!("unterminated macro in {s:?}"));
                    };
                    check_macro(&s[i + 2..i + close], exp_letters)?;
                    i += close + 1;
                }
                _ => return Err(format!("'%' must start a macro or an escape in {s:?}")),
            }
            ends_in_macro = true;
        } else if (0x21..=0x7e).contains(&c) {
            i += 1;
            ends_in_macro = false;
        } else {
            let c = s[i..].chars().next().expect("i is at a character boundary");
            return Err(format!("invalid character {c:?} in {s:?}"));
        }
    }
    Ok(ends_in_macro)
}

/// The inside of `%{...}`: macro-letter transformers *delimiter.
fn check_macro(inner: &str, exp_letters: bool) -> Result<(), String> {
    let mut chars = inner.chars();
    let letter = chars.next().map(|c| c.to_ascii_lowercase());
    let ok = match letter {
        Some('s' | 'l' | 'o' | 'd' | 'i' | 'p' | 'h' | 'v') => true,
        Some('c' | 'r' | 't') => exp_letters,
        _ => false,
    };
    if !ok {
        return Err(format!("unknown macro letter in \"%{{{inner}}}\""));
    }
    let rest = chars.as_str();
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let mut rest = &rest[digits..];
    if let Some(r) = rest.strip_prefix(['r', 'R']) {
        rest = r;
    }
    if let Some(c) = rest
        .chars()
        .find(|c| !matches!(c, '.' | '-' | '+' | ',' | '/' | '_' | '='))
    {
        return Err(format!("invalid {c:?} in macro \"%{{{inner}}}\""));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Record {
        s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn err(s: &str) -> RecordError {
        s.parse::<Record>()
            .expect_err(&format!("{s:?} should be refused"))
    }

    fn mechs(s: &str) -> Vec<(Qualifier, Mechanism)> {
        parse(s)
            .directives
            .into_iter()
            .map(|d| (d.qualifier, d.mechanism))
            .collect()
    }

    fn spec(s: &str) -> DomainSpec {
        DomainSpec(s.into())
    }

    fn net6(s: &str) -> Ipv6Net {
        s.parse().unwrap()
    }

    #[test]
    fn version_selection() {
        assert!(is_spf1("v=spf1"));
        assert!(is_spf1("V=SPF1 -all"));
        assert!(is_spf1("v=spf1 ip6:2001:db8::/32"));
        assert!(!is_spf1("v=spf10"));
        assert!(!is_spf1("v=spf1-all"));
        assert!(!is_spf1("spf2.0/pra ip6:2001:db8::/32"));
        assert!(!is_spf1("google-site-verification=abc"));
        assert!(!is_spf1(""));
        assert!(err("v=spf2 -all").term.is_none());
    }

    #[test]
    fn google_style_record() {
        let r = parse("v=spf1 include:_netblocks.google.com include:_netblocks2.google.com ~all");
        assert_eq!(
            mechs("v=spf1 include:_netblocks.google.com include:_netblocks2.google.com ~all"),
            vec![
                (
                    Qualifier::Pass,
                    Mechanism::Include(spec("_netblocks.google.com"))
                ),
                (
                    Qualifier::Pass,
                    Mechanism::Include(spec("_netblocks2.google.com"))
                ),
                (Qualifier::SoftFail, Mechanism::All),
            ]
        );
        assert_eq!(r.directives[0].text, "include:_netblocks.google.com");
        assert_eq!(r.redirect, None);
    }

    #[test]
    fn ip_mechanisms() {
        assert_eq!(
            mechs("v=spf1 ip6:2001:4860:4000::/36 +ip6:2001:db8::1 -ip4:198.51.100.0/24 ip4:203.0.113.7"),
            vec![
                (Qualifier::Pass, Mechanism::Ip6(net6("2001:4860:4000::/36"))),
                (Qualifier::Pass, Mechanism::Ip6(net6("2001:db8::1/128"))),
                (Qualifier::Fail, Mechanism::Ip4("198.51.100.0/24".parse().unwrap())),
                (Qualifier::Pass, Mechanism::Ip4("203.0.113.7/32".parse().unwrap())),
            ]
        );
        // Host bits are dropped, as a receiver's mask would.
        assert_eq!(
            mechs("v=spf1 ip6:2001:db8::1/32"),
            vec![(Qualifier::Pass, Mechanism::Ip6(net6("2001:db8::/32")))]
        );
        // IPv4-embedded notation is an IPv6 address (RFC 4291 §2.2).
        assert_eq!(
            mechs("v=spf1 ip6:::ffff:198.51.100.1"),
            vec![(
                Qualifier::Pass,
                Mechanism::Ip6(net6("::ffff:198.51.100.1/128"))
            )]
        );
        assert_eq!(
            mechs("v=spf1 ip6:2001:db8::/0"),
            vec![(Qualifier::Pass, Mechanism::Ip6(net6("::/0")))]
        );
    }

    #[test]
    fn a_and_mx_with_dual_cidr() {
        let a = |domain: Option<&str>, cidr6| Mechanism::A {
            domain: domain.map(spec),
            cidr6,
        };
        let mx = |domain: Option<&str>, cidr6| Mechanism::Mx {
            domain: domain.map(spec),
            cidr6,
        };
        assert_eq!(
            mechs("v=spf1 a a/24 a//64 a/24//56 a:mail.example.test a:mail.example.test/28//48 A:x.example.test//0"),
            vec![
                (Qualifier::Pass, a(None, 128)),
                (Qualifier::Pass, a(None, 128)),
                (Qualifier::Pass, a(None, 64)),
                (Qualifier::Pass, a(None, 56)),
                (Qualifier::Pass, a(Some("mail.example.test"), 128)),
                (Qualifier::Pass, a(Some("mail.example.test"), 48)),
                (Qualifier::Pass, a(Some("x.example.test"), 0)),
            ]
        );
        assert_eq!(
            mechs("v=spf1 mx ?mx:example.test//64 MX/32"),
            vec![
                (Qualifier::Pass, mx(None, 128)),
                (Qualifier::Neutral, mx(Some("example.test"), 64)),
                (Qualifier::Pass, mx(None, 128)),
            ]
        );
    }

    #[test]
    fn what_cannot_be_expanded_is_still_parsed() {
        assert_eq!(
            mechs("v=spf1 ptr ptr:example.test exists:%{i}._spf.example.test -all"),
            vec![
                (Qualifier::Pass, Mechanism::Ptr(None)),
                (Qualifier::Pass, Mechanism::Ptr(Some(spec("example.test")))),
                (
                    Qualifier::Pass,
                    Mechanism::Exists(spec("%{i}._spf.example.test"))
                ),
                (Qualifier::Fail, Mechanism::All),
            ]
        );
        let m = spec("%{ir}.%{v}._spf.%{d2}");
        assert_eq!(m.macro_letters(), "ivd");
        assert_eq!(m.literal(), None);
        assert_eq!(spec("a%%b.example.test").macro_letters(), "");
        assert_eq!(spec("example.test").literal(), Some("example.test"));
    }

    #[test]
    fn modifiers() {
        let r = parse("v=spf1 ip6:2001:db8::/32 redirect=_spf.example.test");
        assert_eq!(r.redirect.as_ref().unwrap().0, spec("_spf.example.test"));
        assert_eq!(r.redirect.as_ref().unwrap().1, "redirect=_spf.example.test");
        assert_eq!(r.effective_redirect(), r.redirect.as_ref());
        // exp and unknown modifiers are ignored; c/r/t only there.
        let r =
            parse("v=spf1 -all exp=explain.%{d} moo=%{c}x.example.test Redirect=r.example.test");
        assert!(r.redirect.is_some());
        assert_eq!(r.effective_redirect(), None, "ignored when all is present");
        assert!(
            err("v=spf1 redirect=a.example.test redirect=b.example.test")
                .reason
                .contains("second redirect")
        );
        assert!(err("v=spf1 exp=a.example.test exp=b.example.test")
            .reason
            .contains("second exp"));
        assert!(err("v=spf1 include:%{c}.example.test")
            .reason
            .contains("macro letter"));
    }

    #[test]
    fn terms_after_all_are_not_evaluated() {
        let r = parse("v=spf1 ip6:2001:db8:1::/48 -all ip6:2001:db8:2::/48");
        assert_eq!(r.directives.len(), 3);
        assert_eq!(r.evaluated().len(), 2);
    }

    #[test]
    fn spaces() {
        assert_eq!(mechs("v=spf1").len(), 0);
        assert_eq!(mechs("v=spf1   ip6:2001:db8::/32    -all  ").len(), 2);
    }

    #[test]
    fn syntax_errors_name_the_term() {
        for (rec, term, why) in [
            ("v=spf1 ip6:2001:db8::/129", "ip6:2001:db8::/129", "CIDR"),
            ("v=spf1 ip6:2001:db8::/064", "ip6:2001:db8::/064", "CIDR"),
            (
                "v=spf1 ip6:2001:zz8::/32",
                "ip6:2001:zz8::/32",
                "not an IPv6",
            ),
            (
                "v=spf1 ip6:198.51.100.0/24",
                "ip6:198.51.100.0/24",
                "not an IPv6",
            ),
            ("v=spf1 ip4:198.51.100.0/33", "ip4:198.51.100.0/33", "CIDR"),
            (
                "v=spf1 ip4:2001:db8::/32",
                "ip4:2001:db8::/32",
                "not an IPv4",
            ),
            ("v=spf1 ip6", "ip6", "needs"),
            ("v=spf1 include", "include", "needs"),
            ("v=spf1 include:", "include:", "needs"),
            (
                "v=spf1 include:localhost",
                "include:localhost",
                "multi-label",
            ),
            (
                "v=spf1 include:example.123",
                "include:example.123",
                "top label",
            ),
            ("v=spf1 a:example.test/33", "a:example.test/33", "CIDR"),
            ("v=spf1 a//129", "a//129", "CIDR"),
            ("v=spf1 a/", "a/", "CIDR"),
            ("v=spf1 ax", "ax", "unknown mechanism"),
            ("v=spf1 allx", "allx", "unknown mechanism"),
            ("v=spf1 all:x", "all:x", "no argument"),
            (
                "v=spf1 foo:bar.example",
                "foo:bar.example",
                "unknown mechanism",
            ),
            ("v=spf1 +", "+", "no mechanism"),
            (
                "v=spf1 exists:%{x}.example.test",
                "exists:%{x}.example.test",
                "macro letter",
            ),
            (
                "v=spf1 exists:%{i.example.test",
                "exists:%{i.example.test",
                "unterminated",
            ),
            (
                "v=spf1 include:50%.example.test",
                "include:50%.example.test",
                "'%'",
            ),
            (
                "v=spf1 include:%{ix}.example.test",
                "include:%{ix}.example.test",
                "invalid 'x'",
            ),
        ] {
            let e = err(rec);
            assert_eq!(e.term.as_deref(), Some(term), "{rec}: {e}");
            assert!(e.reason.contains(why), "{rec}: {e}");
            assert!(e.to_string().contains(term), "{e}");
        }
    }

    #[test]
    fn non_ascii_is_refused() {
        let e = err("v=spf1 include:bücher.example");
        assert!(e.reason.contains("invalid character"), "{e}");
    }

    // Records come from anyone's DNS: no input may panic the parser, and
    // what it accepts it accepts as written.
    proptest::proptest! {
        #[test]
        fn never_panics_on_any_text(body in "[ -~\\u{80}-\\u{10ffff}]{0,200}") {
            let _ = format!("v=spf1 {body}").parse::<Record>();
            let _ = body.parse::<Record>();
        }

        #[test]
        fn never_panics_on_term_soup(terms in proptest::collection::vec(
            "[+~?-]?(all|include|a|mx|ptr|ip4|ip6|exists|redirect|exp|x)([:=/][%{}a-z0-9.:/_-]{0,30})?", 0..12)) {
            let _ = format!("v=spf1 {}", terms.join(" ")).parse::<Record>();
        }

        #[test]
        fn ip6_terms_come_back_truncated(addr: u128, len in 0u8..=128) {
            let a = Ipv6Addr::from(addr);
            let r: Record = format!("v=spf1 ip6:{a}/{len}").parse().unwrap();
            let want = Ipv6Net::new(a, len).unwrap().trunc();
            proptest::prop_assert_eq!(&r.directives[0].mechanism, &Mechanism::Ip6(want));
        }
    }
}

//! Domain names as SPF uses them: the names an operator gives (`--spf
//! google.com`) and the literal targets of `include:`, `a:`, `mx:` and
//! `redirect=`.
//!
//! Stricter than RFC 7208's grammar, which allows any visible character in a
//! domain-spec: what is checked here is what can be a DNS name that holds a
//! record — labels of letters, digits, `-` and `_` (`_spf.google.com`), 1–63
//! bytes each, 253 in all, at least two labels, and a top label that is not
//! all digits (RFC 7208's `toplabel`).

/// The longest name (without the trailing dot) DNS can carry.
const MAX_NAME_LEN: usize = 253;
/// The longest label.
const MAX_LABEL_LEN: usize = 63;

/// `name` lowercased, without a trailing dot, if it is a domain name SPF can
/// look up; otherwise why not.
pub fn normalize_domain(name: &str) -> Result<String, String> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return Err("empty name".into());
    }
    if !trimmed.is_ascii() {
        return Err("not ASCII (give an internationalised name in its xn-- form)".into());
    }
    if trimmed.len() > MAX_NAME_LEN {
        return Err(format!(
            "{} bytes long; a DNS name has at most {MAX_NAME_LEN}",
            trimmed.len()
        ));
    }
    let labels: Vec<&str> = trimmed.split('.').collect();
    if labels.len() < 2 {
        return Err("a single label; SPF needs a multi-label domain name".into());
    }
    for label in &labels {
        check_label(label)?;
    }
    let top = labels[labels.len() - 1];
    if top.contains('_') || top.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "top label {top:?} must hold a letter and no underscore"
        ));
    }
    Ok(trimmed.to_ascii_lowercase())
}

fn check_label(label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err("empty label (two dots in a row, or a leading dot)".into());
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(format!(
            "label {label:?} is {} bytes; at most {MAX_LABEL_LEN}",
            label.len()
        ));
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(format!("character {c:?} in label {label:?}"));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(format!("label {label:?} starts or ends with '-'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_normalizes() {
        assert_eq!(normalize_domain("Google.COM").unwrap(), "google.com");
        assert_eq!(normalize_domain("example.test.").unwrap(), "example.test");
        assert_eq!(
            normalize_domain("_netblocks2.google.com").unwrap(),
            "_netblocks2.google.com"
        );
        assert_eq!(
            normalize_domain("spf.protection.outlook.com").unwrap(),
            "spf.protection.outlook.com"
        );
        assert_eq!(
            normalize_domain("xn--bcher-kva.example").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(normalize_domain("a1.b2.c3").unwrap(), "a1.b2.c3");
    }

    #[test]
    fn refuses_with_a_reason() {
        let err = |s: &str| normalize_domain(s).unwrap_err();
        assert!(err("").contains("empty"));
        assert!(err(".").contains("empty"));
        assert!(err("localhost").contains("single label"));
        assert!(err("a..b").contains("empty label"));
        assert!(err(".a.b").contains("empty label"));
        assert!(err("exa mple.com").contains("' '"));
        assert!(err("ex!ample.com").contains("'!'"));
        assert!(err("-a.com").contains("starts or ends"));
        assert!(err("bücher.example").contains("xn--"));
        assert!(err("example.123").contains("top label"));
        assert!(err("example._x").contains("top label"));
        assert!(err(&format!("{}.com", "a".repeat(64))).contains("at most 63"));
        let long = vec!["a".repeat(60); 5].join(".");
        assert!(err(&long).contains("at most 253"), "{}", err(&long));
        assert!(err("2001:db8::1").contains("single label"));
        assert!(err("mx.example.test:25").contains("':'"));
        assert!(err("%{d}.example.com").contains("'%'"));
    }
}

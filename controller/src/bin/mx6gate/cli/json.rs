//! `--json`: each read-only verb prints one JSON object whose `"schema"`
//! names its shape and that shape's version, e.g. `"mx6gate.check/1"`.
//! A field added keeps the version; a field removed, renamed or changed in
//! meaning bumps it, so a script can refuse a shape it does not know.
//! README.md ("Machine-readable output") documents every shape; the tests
//! below pin each one's fields.
use anyhow::Result;
use serde::Serialize;

/// `mx6gate check ADDR --json`.
pub const CHECK: &str = "mx6gate.check/1";
/// `mx6gate doctor --json`.
pub const DOCTOR: &str = "mx6gate.doctor/1";
/// `mx6gate top --json`.
pub const TOP: &str = "mx6gate.top/1";
/// `mx6gate status --json`.
pub const STATUS: &str = "mx6gate.status/1";
/// `mx6gate partner list --json`.
pub const PARTNERS: &str = "mx6gate.partners/1";

#[derive(Serialize)]
struct Versioned<'a, T: Serialize> {
    schema: &'static str,
    #[serde(flatten)]
    body: &'a T,
}

/// The object `body` serializes to, with `"schema": schema` first.
pub fn to_string<T: Serialize>(schema: &'static str, body: &T) -> Result<String> {
    Ok(serde_json::to_string_pretty(&Versioned { schema, body })?)
}

pub fn print<T: Serialize>(schema: &'static str, body: &T) -> Result<()> {
    println!("{}", to_string(schema, body)?);
    Ok(())
}

#[cfg(test)]
pub mod tests {
    use serde_json::Value;

    /// The top-level keys of a printed object, in order.
    pub fn keys(text: &str) -> Vec<String> {
        let v: Value = serde_json::from_str(text).unwrap();
        v.as_object().unwrap().keys().cloned().collect()
    }

    #[test]
    fn schema_comes_first() {
        #[derive(serde::Serialize)]
        struct B {
            a: u8,
        }
        let t = super::to_string("x.y/1", &B { a: 1 }).unwrap();
        assert!(
            t.starts_with("{\n  \"schema\": \"x.y/1\",\n  \"a\": 1"),
            "{t}"
        );
    }
}

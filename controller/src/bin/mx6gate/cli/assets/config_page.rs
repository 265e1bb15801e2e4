//! `mx6gate.toml(5)`, generated from the annotated example config
//! (controller/mx6gate.example.toml), so the page and the example can never
//! disagree: a key added to the example (with its comment) is a new entry
//! in the page.
//!
//! What the example's layout means here:
//! - the first comment block (after the title line) is the DESCRIPTION;
//! - `[table]` starts a section; a comment block followed by a blank line
//!   is that section's introduction;
//! - a comment block directly above `key = value` documents that key, and
//!   the value shown is its default ("unless noted" in the text); above a
//!   commented-out `#key = value` it documents a key with no fixed default,
//!   the value being an example;
//! - in comments, an empty `#` line separates paragraphs, and lines
//!   indented by two or more spaces (value lists) are kept as written.
use anyhow::{bail, Result};

use super::roff::{bold, escape, literal};

pub const EXAMPLE: &str = include_str!("../../../../../mx6gate.example.toml");

#[derive(Debug, PartialEq)]
pub enum Block {
    Text(String),
    Literal(Vec<String>),
}

#[derive(Debug)]
pub struct Key {
    pub name: String,
    pub value: String,
    /// Written as `#key = value`: an example, not a default.
    pub example_only: bool,
    pub text: Vec<Block>,
}

#[derive(Debug, Default)]
pub struct Section {
    /// None for the top-level keys.
    pub table: Option<String>,
    pub intro: Vec<Block>,
    pub keys: Vec<Key>,
}

#[derive(Debug)]
pub struct Doc {
    pub description: Vec<Block>,
    pub sections: Vec<Section>,
}

/// Read the annotated example. Anything it cannot place (a comment block
/// that documents nothing, a line it does not know) is an error naming the
/// line, so a change to the example cannot silently drop text.
pub fn parse(example: &str) -> Result<Doc> {
    let mut description = None;
    let mut sections = vec![Section::default()];
    let mut pending: Vec<(usize, String)> = Vec::new();
    for (i, line) in example.lines().enumerate() {
        let n = i + 1;
        let line = line.trim_end();
        if let Some(c) = line.strip_prefix('#') {
            if let Some((name, value)) = commented_key(c) {
                let text = blocks(&pending);
                pending.clear();
                current(&mut sections).keys.push(Key {
                    name,
                    value,
                    example_only: true,
                    text,
                });
                continue;
            }
            pending.push((n, c.strip_prefix(' ').unwrap_or(c).to_string()));
            continue;
        }
        if line.is_empty() {
            if pending.is_empty() {
                continue;
            }
            if description.is_none() {
                // The title line ("mx6gate.example.toml — …") is not prose.
                description = Some(blocks(&pending[1..]));
            } else {
                let s = current(&mut sections);
                if !s.keys.is_empty() {
                    bail!(
                        "{}: line {}: a comment block between keys documents nothing (put it above a key, or at the top of a table)",
                        "mx6gate.example.toml",
                        pending[0].0
                    );
                }
                s.intro.extend(blocks(&pending));
            }
            pending.clear();
            continue;
        }
        if let Some(t) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            if !pending.is_empty() {
                bail!(
                    "mx6gate.example.toml: line {}: a comment right above [{t}]: leave a blank line, or move it below the table header",
                    pending[0].0
                );
            }
            sections.push(Section {
                table: Some(t.to_string()),
                ..Section::default()
            });
            continue;
        }
        let Some((name, value)) = key_line(line) else {
            bail!("mx6gate.example.toml: line {n}: not a comment, table or key: {line:?}");
        };
        if pending.is_empty() {
            bail!("mx6gate.example.toml: line {n}: key {name} has no comment explaining it");
        }
        let text = blocks(&pending);
        pending.clear();
        current(&mut sections).keys.push(Key {
            name,
            value,
            example_only: false,
            text,
        });
    }
    let Some(description) = description else {
        bail!("mx6gate.example.toml: no opening comment block");
    };
    Ok(Doc {
        description,
        sections,
    })
}

fn current(sections: &mut [Section]) -> &mut Section {
    sections.last_mut().expect("one section from the start")
}

/// `key = value`.
fn key_line(line: &str) -> Option<(String, String)> {
    let (k, v) = line.split_once(" = ")?;
    let ok = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    ok.then(|| (k.to_string(), v.trim().to_string()))
}

/// `#key = value` (no space after the `#`): a commented-out key.
fn commented_key(after_hash: &str) -> Option<(String, String)> {
    if !after_hash.starts_with(|c: char| c.is_ascii_lowercase()) {
        return None;
    }
    key_line(after_hash)
}

/// Comment lines into paragraphs and literal blocks.
fn blocks(lines: &[(usize, String)]) -> Vec<Block> {
    let mut out = Vec::new();
    let mut para = String::new();
    let mut lit: Vec<String> = Vec::new();
    let flush_para = |para: &mut String, out: &mut Vec<Block>| {
        if !para.is_empty() {
            out.push(Block::Text(std::mem::take(para)));
        }
    };
    for (_, l) in lines {
        if l.starts_with("  ") {
            flush_para(&mut para, &mut out);
            lit.push(l.to_string());
            continue;
        }
        if !lit.is_empty() {
            out.push(Block::Literal(dedent(std::mem::take(&mut lit))));
        }
        if l.trim().is_empty() {
            flush_para(&mut para, &mut out);
            continue;
        }
        if !para.is_empty() {
            para.push(' ');
        }
        para.push_str(l.trim());
    }
    if !lit.is_empty() {
        out.push(Block::Literal(dedent(lit)));
    }
    flush_para(&mut para, &mut out);
    out
}

fn dedent(lines: Vec<String>) -> Vec<String> {
    let n = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    lines
        .into_iter()
        .map(|l| l.get(n..).unwrap_or("").to_string())
        .collect()
}

fn render_blocks(out: &mut String, blocks: &[Block], first_follows_tag: bool) {
    for (i, b) in blocks.iter().enumerate() {
        match b {
            Block::Text(t) => {
                if i > 0 || !first_follows_tag {
                    out.push_str(if first_follows_tag { ".IP\n" } else { ".PP\n" });
                }
                out.push_str(&escape(t));
                out.push('\n');
            }
            // In a key's body: at the body's indent (an .RS there would
            // indent from the tag's margin instead).
            Block::Literal(lines) if first_follows_tag => {
                if i > 0 {
                    out.push_str(".IP\n");
                }
                out.push_str(".nf\n");
                for l in lines {
                    out.push_str(&escape(l));
                    out.push('\n');
                }
                out.push_str(".fi\n");
            }
            Block::Literal(lines) => out.push_str(&literal(lines)),
        }
    }
}

/// The whole page.
pub fn render(doc: &Doc, version: &str) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        ".TH MX6GATE.TOML 5 \"\" \"mx6gate {version}\" \"mx6gate\"\n\
         .SH NAME\n\
         mx6gate.toml \\- configuration of the mx6gate IPv6 SMTP gate\n\
         .SH SYNOPSIS\n\
         /etc/mx6gate/mx6gate.toml\n\
         .SH DESCRIPTION\n"
    ));
    render_blocks(&mut out, &doc.description, false);
    out.push_str(
        ".PP\nThe file is read by \\fBmx6gate run\\fR at start and on SIGHUP \
         (\\fBsystemctl reload mx6gate\\fR), and by every other command through \
         \\fB\\-\\-config\\fR. Each entry below shows a key with its default value.\n",
    );
    for s in &doc.sections {
        match &s.table {
            None => out.push_str(".SH TOP\\-LEVEL KEYS\n"),
            Some(t) => out.push_str(&format!(".SH [{}] TABLE\n", escape(t))),
        }
        render_blocks(&mut out, &s.intro, false);
        for k in &s.keys {
            out.push_str(".TP\n");
            let value = if k.example_only {
                format!(
                    "{} (no fixed default; for example {})",
                    bold(&k.name),
                    escape(&k.value)
                )
            } else {
                format!("{} = {}", bold(&k.name), escape(&k.value))
            };
            out.push_str(&value);
            out.push('\n');
            render_blocks(&mut out, &k.text, true);
        }
    }
    out.push_str(PARTNER_FILES);
    out.push_str(&format!(
        ".SH EXAMPLE\nA gateway protecting eth0, deferring non\\-partners with \
         the default 421:\n{}",
        literal(
            &[
                "interfaces = [\"eth0\"]",
                "mode = \"defer\"",
                "",
                "[responder]",
                "hostname = \"mx2.example.org\"",
            ]
            .map(String::from)
        )
    ));
    out.push_str(
        ".SH FILES\n\
         .TP\n/etc/mx6gate/mx6gate.toml\nThis file (a conffile of the Debian package).\n\
         .TP\n/etc/mx6gate/partners.d/*.toml\nThe partner store (\\fBpartners_dir\\fR).\n\
         .TP\n/var/lib/mx6gate\nRuntime state (\\fBstate_dir\\fR).\n\
         .TP\n/sys/fs/bpf/mx6gate\nThe pinned programs, links and maps (\\fBpin_path\\fR).\n\
         .TP\n/usr/share/doc/mx6gate/examples/mx6gate.toml\nThe annotated example this page is made from.\n\
         .SH SEE ALSO\n\
         \\fBmx6gate\\fR(8), \\fBmx6gate\\-run\\fR(8), \\fBmx6gate\\-partner\\-add\\fR(8), \
         \\fBmx6gate\\-mode\\fR(8), \\fBmx6gate\\-doctor\\fR(8)\n",
    );
    out
}

const PARTNER_FILES: &str = r#".SH PARTNER FILES
Every *.toml file in \fBpartners_dir\fR holds zero or more partners. \fBmx6gate partner add\fR writes one file per partner it creates; configuration management may drop files with several:
.RS 4
.nf
[[partner]]
name = "example\-isp"
prefixes = ["2001:db8:1000::/36", "2001:db8:2::25/128"]
note = "their outbound MTAs, ticket 123"   # optional
expires = "2027\-03\-31"                     # optional: allowed through that day (UTC)
.fi
.RE
.PP
The store is validated whole: one bad item in any file (an IPv4 or malformed prefix, host bits set, a duplicate, an unknown key) refuses the store with a message naming the file, the partner and the item, and the gate keeps the allowlist it had. The daemon picks changes up within a second.
"#;

/// The page made from the example this binary was built with.
pub fn page(version: &str) -> Result<String> {
    Ok(render(&parse(EXAMPLE)?, version))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key of the example, as `table.key`, from the TOML itself.
    fn toml_keys(example: &str) -> Vec<String> {
        let v: toml::Table = toml::from_str(example).unwrap();
        let mut keys = Vec::new();
        for (k, v) in &v {
            match v {
                toml::Value::Table(t) => keys.extend(t.keys().map(|n| format!("{k}.{n}"))),
                _ => keys.push(k.clone()),
            }
        }
        keys
    }

    #[test]
    fn every_key_of_the_example_has_an_entry_with_its_text() {
        let doc = parse(EXAMPLE).unwrap();
        let documented: Vec<String> = doc
            .sections
            .iter()
            .flat_map(|s| {
                s.keys
                    .iter()
                    .filter(|k| !k.example_only)
                    .map(|k| match &s.table {
                        Some(t) => format!("{t}.{}", k.name),
                        None => k.name.clone(),
                    })
            })
            .collect();
        let mut want = toml_keys(EXAMPLE);
        want.sort();
        let mut got = documented.clone();
        got.sort();
        assert_eq!(got, want);
        for s in &doc.sections {
            for k in &s.keys {
                assert!(!k.text.is_empty(), "{}: no text", k.name);
            }
        }
        // The commented-out key is there too, as an example.
        let hostname = doc
            .sections
            .iter()
            .flat_map(|s| &s.keys)
            .find(|k| k.name == "hostname")
            .unwrap();
        assert!(hostname.example_only);
        let page = page("0.0.0").unwrap();
        for k in &want {
            let name = k.rsplit('.').next().unwrap();
            assert!(
                page.contains(&format!(".TP\n{} ", bold(name))),
                "no entry for {k}"
            );
        }
        // The value lists are kept as lists.
        assert!(page.contains(".IP\n.nf\nmonitor  let it through"), "{page}");
        // Ranges from the prose reach the page.
        assert!(page.contains("16 to 16777216"));
    }

    #[test]
    fn layout_errors_name_the_line() {
        for (text, needle) in [
            (
                "# title\n# about\n\n# orphan\n\nkey = 1\n",
                "key has no comment",
            ),
            (
                "# title\n\n# doc\na = 1\n# stray\n\n",
                "line 5: a comment block between keys",
            ),
            (
                "# title\n\n# oops\n[t]\n",
                "line 3: a comment right above [t]",
            ),
            (
                "# title\n\n# doc\nnot a key\n",
                "line 4: not a comment, table or key",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn paragraphs_and_literals() {
        let lines: Vec<(usize, String)> = ["one", "two", "", "  a  x", "  b  y", "three"]
            .iter()
            .enumerate()
            .map(|(i, s)| (i, s.to_string()))
            .collect();
        assert_eq!(
            blocks(&lines),
            [
                Block::Text("one two".into()),
                Block::Literal(vec!["a  x".into(), "b  y".into()]),
                Block::Text("three".into()),
            ]
        );
    }
}

//! Text into roff (man(7)): escaping, filled paragraphs and literal blocks.

/// Escape `s` for a roff text line: backslashes, hyphens (as `\-`, so
/// options and commands copy as typed), and a leading `.` or `'` that
/// roff would read as a request.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            _ => out.push(c),
        }
    }
    if out.starts_with('.') || out.starts_with('\'') {
        out.insert_str(0, "\\&");
    }
    out
}

/// `\fBtext\fR`.
pub fn bold(s: &str) -> String {
    format!("\\fB{}\\fR", escape(s))
}

/// A block of literal lines (no filling), indented.
pub fn literal(lines: &[String]) -> String {
    let mut out = String::from(".sp\n.RS 4\n.nf\n");
    for l in lines {
        out.push_str(&escape(l));
        out.push('\n');
    }
    out.push_str(".fi\n.RE\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(escape("a-b \\ c"), "a\\-b \\e c");
        assert_eq!(escape(".hidden"), "\\&.hidden");
        assert_eq!(escape("'quoted"), "\\&'quoted");
        assert_eq!(bold("--json"), "\\fB\\-\\-json\\fR");
    }
}

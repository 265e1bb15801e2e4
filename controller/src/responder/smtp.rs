//! The SMTP side of the responder (RFC 5321), free of I/O: the reply
//! text template, the fixed replies, and what each command line gets.
//!
//! The responder never accepts mail: the greeting is a 4xx, and so is the
//! answer to every command that could lead towards a transaction (EHLO,
//! HELO, MAIL, RCPT, DATA, BDAT, RSET, VRFY, EXPN). DATA is never answered
//! with 354, so no line is ever read as message content.
use std::net::Ipv6Addr;

/// Longest command line, CRLF included (RFC 5321 4.5.3.1.4).
pub const MAX_COMMAND_LINE: usize = 512;
/// Longest reply line, CRLF included (RFC 5321 4.5.3.1.5).
pub const MAX_REPLY_LINE: usize = 512;
/// Longest text form of an IPv6 address
/// (`ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`): what `%A` can take.
pub const MAX_ADDR_TEXT: usize = 45;

/// A problem with a reply text template, in words for a config error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    Empty,
    LineBreak,
    BadChar(char),
    UnknownEscape(char),
    TrailingPercent,
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TemplateError::Empty => write!(f, "must not be empty"),
            TemplateError::LineBreak => {
                write!(f, "contains CR or LF (an SMTP reply here is a single line)")
            }
            TemplateError::BadChar(c) => write!(
                f,
                "contains {c:?} (U+{:04X}): only printable ASCII is allowed in an SMTP reply",
                *c as u32
            ),
            TemplateError::UnknownEscape(c) => write!(
                f,
                "uses \"%{c}\", which is not a known escape (%A is the peer address, %H the host name, %% a literal %)"
            ),
            TemplateError::TrailingPercent => write!(
                f,
                "ends with a lone % (write %% for a literal %)"
            ),
        }
    }
}

/// Check a reply text template and return the longest its expansion can
/// be for a host name of `hostname_len` octets.
pub fn check_template(text: &str, hostname_len: usize) -> Result<usize, TemplateError> {
    if text.is_empty() {
        return Err(TemplateError::Empty);
    }
    let mut max = 0;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\r' | '\n' => return Err(TemplateError::LineBreak),
            '%' => match chars.next() {
                Some('A') => max += MAX_ADDR_TEXT,
                Some('H') => max += hostname_len,
                Some('%') => max += 1,
                Some(c) => return Err(TemplateError::UnknownEscape(c)),
                None => return Err(TemplateError::TrailingPercent),
            },
            ' '..='~' => max += 1,
            c => return Err(TemplateError::BadChar(c)),
        }
    }
    Ok(max)
}

/// Expand `%A`, `%H` and `%%` in `text`. Anything a validated template
/// cannot contain (an unknown escape, a control or non-ASCII character) is
/// replaced by `?`, so even an unvalidated template gives one clean line.
pub fn expand_text(text: &str, peer: Ipv6Addr, hostname: &str) -> String {
    let mut out = String::with_capacity(text.len() + MAX_ADDR_TEXT + hostname.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' => match chars.next() {
                Some('A') => out.push_str(&peer.to_string()),
                Some('H') => push_clean(&mut out, hostname),
                Some('%') => out.push('%'),
                _ => out.push('?'),
            },
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out
}

fn push_clean(out: &mut String, s: &str) {
    out.extend(
        s.chars()
            .map(|c| if (' '..='~').contains(&c) { c } else { '?' }),
    );
}

/// `<code> <enhanced> <text>` CRLF, cut to [`MAX_REPLY_LINE`] octets.
pub fn reply_line(code: u16, enhanced: &str, text: &str) -> String {
    let mut line = format!("{code} {enhanced} {text}");
    // Everything is ASCII after expand_text, so any cut is at a char boundary.
    if line.len() > MAX_REPLY_LINE - 2 {
        let mut cut = MAX_REPLY_LINE - 2;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
    }
    line.push_str("\r\n");
    line
}

/// The replies that do not depend on the peer, built once per responder.
#[derive(Debug, Clone)]
pub struct FixedReplies {
    pub noop: String,
    pub quit: String,
    pub help: String,
    pub not_implemented: String,
    pub unrecognized: String,
    pub syntax: String,
    pub line_too_long: String,
    pub too_many_commands: String,
    pub over_cap: String,
    pub idle_timeout: String,
    pub session_timeout: String,
}

impl FixedReplies {
    pub fn new(hostname: &str) -> FixedReplies {
        let mut host = String::new();
        push_clean(&mut host, hostname);
        let l = |code: u16, enh: &str, text: &str| reply_line(code, enh, text);
        FixedReplies {
            noop: l(250, "2.0.0", "OK"),
            quit: l(221, "2.0.0", &format!("{host} closing connection")),
            help: l(
                214,
                "2.0.0",
                "This host does not accept mail over IPv6 yet; please send over IPv4",
            ),
            not_implemented: l(502, "5.5.1", "command not implemented"),
            unrecognized: l(500, "5.5.1", "command unrecognized"),
            syntax: l(500, "5.5.2", "syntax error"),
            line_too_long: l(500, "5.5.2", "line too long"),
            too_many_commands: l(
                421,
                "4.7.0",
                &format!("{host} too many commands, closing connection"),
            ),
            over_cap: l(421, "4.7.0", &format!("{host} too many connections")),
            idle_timeout: l(
                421,
                "4.4.2",
                &format!("{host} idle timeout, closing connection"),
            ),
            session_timeout: l(
                421,
                "4.4.2",
                &format!("{host} session time limit reached, closing connection"),
            ),
        }
    }
}

/// What to do with one command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The configured 4xx (the same line as the greeting).
    Deny,
    Noop,
    Help,
    /// 221, then close.
    Quit,
    NotImplemented,
    Unrecognized,
    Syntax,
}

impl Answer {
    pub fn closes(self) -> bool {
        self == Answer::Quit
    }
}

/// Verbs that lead towards a mail transaction: all get the 4xx.
const DENIED: [&[u8]; 9] = [
    b"EHLO", b"HELO", b"MAIL", b"RCPT", b"DATA", b"BDAT", b"RSET", b"VRFY", b"EXPN",
];
/// Verbs some MTA implements that we do not: 502.
const NOT_IMPLEMENTED: [&[u8]; 10] = [
    b"STARTTLS",
    b"AUTH",
    b"ETRN",
    b"ATRN",
    b"TURN",
    b"SEND",
    b"SOML",
    b"SAML",
    b"XCLIENT",
    b"XFORWARD",
];

/// Classify one command line (without its line terminator; a trailing CR
/// is ignored). Only the verb matters: arguments are never interpreted.
pub fn answer(line: &[u8]) -> Answer {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // Anything outside printable ASCII (NUL, binary, UTF-8) is a syntax
    // error in a command line (RFC 5321 2.4: commands are ASCII).
    if line.is_empty() || !line.iter().all(|b| (b' '..=b'~').contains(b)) {
        return Answer::Syntax;
    }
    let verb = match line.iter().position(|&b| b == b' ') {
        Some(i) => &line[..i],
        None => line,
    };
    if verb.is_empty() || verb.len() > 16 || !verb.iter().all(u8::is_ascii_alphabetic) {
        return Answer::Syntax;
    }
    let is = |v: &[u8]| verb.eq_ignore_ascii_case(v);
    if DENIED.iter().any(|v| is(v)) {
        Answer::Deny
    } else if is(b"NOOP") {
        Answer::Noop
    } else if is(b"HELP") {
        Answer::Help
    } else if is(b"QUIT") {
        Answer::Quit
    } else if NOT_IMPLEMENTED.iter().any(|v| is(v)) {
        Answer::NotImplemented
    } else {
        Answer::Unrecognized
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_checks() {
        assert_eq!(check_template("abc", 10), Ok(3));
        assert_eq!(check_template("%H %A %%", 10), Ok(10 + 1 + 45 + 1 + 1));
        assert_eq!(check_template("", 1), Err(TemplateError::Empty));
        assert_eq!(check_template("a\r\nb", 1), Err(TemplateError::LineBreak));
        assert_eq!(check_template("a\nb", 1), Err(TemplateError::LineBreak));
        assert_eq!(
            check_template("%s", 1),
            Err(TemplateError::UnknownEscape('s'))
        );
        assert_eq!(
            check_template("100%", 1),
            Err(TemplateError::TrailingPercent)
        );
        assert_eq!(check_template("a\tb", 1), Err(TemplateError::BadChar('\t')));
        assert_eq!(check_template("é", 1), Err(TemplateError::BadChar('é')));
        assert_eq!(check_template("a\0", 1), Err(TemplateError::BadChar('\0')));
    }

    #[test]
    fn expansion() {
        let peer: Ipv6Addr = "2001:db8:2::25".parse().unwrap();
        assert_eq!(
            expand_text("%H: from %A, 100%% sure", peer, "mx.example.test"),
            "mx.example.test: from 2001:db8:2::25, 100% sure"
        );
        // Unvalidated input still gives one clean line.
        assert_eq!(expand_text("a%xb%\r\né", peer, "h\nx"), "a?b???");
        assert_eq!(expand_text("%H", peer, "h\nx"), "h?x");
    }

    #[test]
    fn reply_lines_are_bounded() {
        assert_eq!(reply_line(421, "4.7.0", "hi"), "421 4.7.0 hi\r\n");
        let long = reply_line(421, "4.7.0", &"x".repeat(2000));
        assert_eq!(long.len(), MAX_REPLY_LINE);
        assert!(long.ends_with("\r\n"));
        let f = FixedReplies::new("mx.example.test");
        assert_eq!(f.quit, "221 2.0.0 mx.example.test closing connection\r\n");
        assert_eq!(f.noop, "250 2.0.0 OK\r\n");
    }

    #[test]
    fn answers() {
        for v in [
            "EHLO x",
            "helo x",
            "MAIL FROM:<a@b>",
            "RCPT TO:<c@d>",
            "DATA",
            "BDAT 10 LAST",
            "RSET",
            "VRFY x",
            "EXPN x",
        ] {
            assert_eq!(answer(v.as_bytes()), Answer::Deny, "{v}");
        }
        assert_eq!(answer(b"NOOP"), Answer::Noop);
        assert_eq!(answer(b"noop anything\r"), Answer::Noop);
        assert_eq!(answer(b"HELP"), Answer::Help);
        assert_eq!(answer(b"QUIT"), Answer::Quit);
        assert!(answer(b"QUIT").closes());
        assert_eq!(answer(b"STARTTLS"), Answer::NotImplemented);
        assert_eq!(answer(b"AUTH PLAIN x"), Answer::NotImplemented);
        assert_eq!(answer(b"FOO"), Answer::Unrecognized);
        assert_eq!(answer(b""), Answer::Syntax);
        assert_eq!(answer(b"\r"), Answer::Syntax);
        assert_eq!(answer(b"."), Answer::Syntax);
        assert_eq!(answer(b"Subject: hi"), Answer::Syntax);
        assert_eq!(answer(b" EHLO"), Answer::Syntax);
        assert_eq!(answer(b"EHLO \x00"), Answer::Syntax);
        assert_eq!(answer(b"EHLO \xff"), Answer::Syntax);
    }
}

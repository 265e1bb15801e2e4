//! tracing setup: human text or JSON lines (`--log-format json`, one object
//! per event with its fields flattened) on stderr; RUST_LOG overrides the
//! level. Under systemd, stderr goes to journald, which stamps each line
//! itself: text lines then drop their own timestamp (JSON keeps it, as a
//! field for whatever parses the lines).
use clap::ValueEnum;
use tracing_subscriber::{fmt, EnvFilter};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init(format: LogFormat, daemon: bool) {
    // One-shot commands print their own results; only warnings go to the log.
    let default = if daemon { "info" } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Colour only for a person at a terminal; journald and files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // systemd sets JOURNAL_STREAM when stdout/stderr are connected to journald.
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text if journald => builder.with_target(false).without_time().init(),
        LogFormat::Text => builder.with_target(false).init(),
    }
}

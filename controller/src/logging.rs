//! tracing setup: human text or JSON lines on stderr (journald takes
//! either); RUST_LOG overrides the level.
use tracing_subscriber::{fmt, EnvFilter};

use crate::cli::LogFormat;

pub fn init(format: LogFormat, daemon: bool) {
    // One-shot commands print their own results; only warnings go to the log.
    let default = if daemon { "info" } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Colour only for a person at a terminal; journald and files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.with_target(false).init(),
    }
}

//! The `mx6gate` command line: one file per verb. Every verb takes
//! `--config`, works with or without a running daemon, and validates its
//! input whole before touching the store, the state or the maps.
mod assets;
mod check;
mod detach;
mod doctor;
mod json;
mod mode;
mod partner;
mod run;
mod status;
mod sync;
mod top;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
pub use mx6gate::context::Ctx;

use crate::logging::LogFormat;

#[derive(Parser, Debug)]
#[command(
    name = "mx6gate",
    version,
    about = "Turn IPv6 SMTP from non-partner networks back to IPv4, at the NIC"
)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, global = true, default_value = mx6gate::config::DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Log format for `run` (and warnings of other commands).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    Monitor,
    Defer,
    Reset,
    Drop,
}

impl From<ModeArg> for mx6gate_common::Mode {
    fn from(m: ModeArg) -> Self {
        use mx6gate_common::Mode;
        match m {
            ModeArg::Monitor => Mode::Monitor,
            ModeArg::Defer => Mode::Defer,
            ModeArg::Reset => Mode::Reset,
            ModeArg::Drop => Mode::Drop,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Load, attach and keep the gate in sync with the partner store.
    Run(run::Args),
    /// Edit and list the partner allowlist.
    #[command(subcommand)]
    Partner(partner::Cmd),
    /// Set what happens to non-partner IPv6 SYNs (persisted).
    Mode {
        #[arg(value_enum)]
        mode: ModeArg,
    },
    /// Show the gate: attachment, mode, counters, allowlist, store health.
    Status(status::Args),
    /// Make the gate's maps match the partner store and the mode now (what
    /// every changing command and the daemon do); heals a mismatch.
    Sync,
    /// The busiest non-partner source prefixes (asks the running daemon):
    /// who is being turned away, or in monitor mode who would be.
    Top(top::Args),
    /// Say what the gate would do with an SMTP connection from ADDR.
    Check(check::Args),
    /// Remove the gate: detach XDP, unpin programs and maps, stop the daemon.
    Detach,
    /// Check that turning IPv6 away loses no mail: kernel, gate, MTA
    /// listeners, IPv4 reachability, partner expiry, and a domain's MX set.
    /// Exit status 0: all good; 1: warnings; 2: failures.
    Doctor(doctor::Args),
    /// Write man pages and shell completions into DIR (for packaging).
    #[command(hide = true)]
    GenerateAssets { dir: PathBuf },
}

pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.cmd, Cmd::Run(_)) {
        // A CLI verb whose reader went away (`mx6gate status | head`) ends
        // quietly, like any Unix tool, instead of panicking in println!.
        // Not for `run`: the daemon handles EPIPE on its sockets itself.
        // SAFETY: restoring a signal's default action before any thread.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    crate::logging::init(cli.log_format, matches!(cli.cmd, Cmd::Run(_)));
    let result = match cli.cmd {
        Cmd::Run(args) => run::run(&cli.config, args),
        Cmd::Partner(cmd) => partner::run(&cli.config, cmd),
        Cmd::Mode { mode } => mode::run(&cli.config, mode.into()),
        Cmd::Status(args) => status::run(&cli.config, args),
        Cmd::Sync => sync::run(&cli.config),
        Cmd::Top(args) => top::run(&cli.config, args),
        Cmd::Check(args) => check::run(&cli.config, args),
        Cmd::Detach => detach::run(&cli.config),
        Cmd::Doctor(args) => match doctor::run(&cli.config, args) {
            Ok(code) => return code,
            Err(e) => Err(e),
        },
        Cmd::GenerateAssets { dir } => assets::run(&dir),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mx6gate: error: {e:#}");
            if e.downcast_ref::<run::ConfigRefused>().is_some() {
                std::process::ExitCode::from(run::EXIT_CONFIG)
            } else if e.downcast_ref::<mx6gate::kernel::BelowFloor>().is_some() {
                std::process::ExitCode::from(run::EXIT_KERNEL)
            } else {
                std::process::ExitCode::from(1)
            }
        }
    }
}

/// "gate updated" or why not, for messages after an edit.
pub fn loaded_note(loaded: bool) -> &'static str {
    if loaded {
        "the running gate is updated"
    } else {
        "no gate is loaded; it applies when `mx6gate run` starts"
    }
}

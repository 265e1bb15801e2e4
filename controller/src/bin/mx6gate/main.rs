//! The `mx6gate` binary: the command line (`cli`, one file per verb) and
//! the log setup, over the `mx6gate` library. The library never imports
//! either: this binary is the edge where errors are printed and turned
//! into exit statuses.
mod cli;
mod logging;

fn main() -> std::process::ExitCode {
    cli::main()
}

fn main() -> std::process::ExitCode {
    mx6gate::cli::main()
}

fn main() -> std::process::ExitCode {
    hubgrade::cli::main()
}

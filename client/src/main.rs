fn main() -> std::process::ExitCode {
    keqing::cli::main()
}

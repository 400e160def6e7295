fn main() -> std::process::ExitCode {
    llama_mapper::cli::main()
}

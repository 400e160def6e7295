fn main() -> std::process::ExitCode {
    // `mapper … | head` should end quietly, as other Unix tools do, not panic in println!
    // with "Broken pipe": Rust ignores SIGPIPE by default; restore the default action.
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    llama_mapper::cli::main()
}

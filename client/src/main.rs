//! `keqing`: the office command line. A thin binary: [`cli`] parses the
//! arguments, calls the office library (`keqing-office`) or the demo
//! (`keqing-demo`), and prints what they return.

mod cli;

/// mimalloc rather than the system allocator: automerge allocates small
/// objects by the million while a fresh device merges its office's dossiers
/// on every core, and glibc's malloc took about a sixth of that CPU (the
/// sync benchmark's pull used 15–20 % less CPU with mimalloc).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}

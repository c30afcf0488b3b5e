//! The `stagepass` binary: parse arguments and hand over to the library.

fn main() -> std::process::ExitCode {
    stagepass::cli::main()
}

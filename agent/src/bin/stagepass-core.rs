//! The full `stagepass-core` binary: the agent and every command; `stagepass` `exec`s it.

fn main() -> std::process::ExitCode {
    stagepass::cli::main()
}

//! The `stagepass` binary: the small front that answers `stagepass token NAME` and hands
//! every other command to `stagepass-core` beside it (see `stagepass::cli::front`).

fn main() -> std::process::ExitCode {
    stagepass::cli::front::main()
}

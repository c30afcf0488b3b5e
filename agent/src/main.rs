//! The `stagepass` binary: the small front that answers `stagepass token NAME` and hands
//! every other command to `stagepass-core` beside it (see `stagepass::cli::front`).
//!
//! It exports the C `main` itself (`no_main`) instead of going through std's start-up: that
//! start-up reads `/proc/self/maps` to install a stack-overflow handler, polls the three
//! standard descriptors and changes SIGPIPE, about 40 us of every `$(stagepass token NAME)`
//! (`perf stat`), none of which this binary needs. Arguments and environment still come
//! through std, which captures them on glibc before any `main` runs.
// The test harness brings its own `main` to the test build of this target.
#![cfg_attr(not(test), no_main)]

/// The process entry point; returns the exit code to the C runtime, which exits with it.
// Exporting an unmangled `main` is the one thing here that needs `unsafe`; the function itself
// runs only safe code.
#[cfg(not(test))]
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    std::ffi::c_int::from(stagepass::cli::front::main())
}

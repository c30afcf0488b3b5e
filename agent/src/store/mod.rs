//! Refresh tokens at rest: a persistent keyring when one answers, else a 0600 file store.
//!
//! INTERFACE STUB: filled in by the broker work.

//! Harness for the end-to-end tests: starts the real peers on loopback and stops them by PID.

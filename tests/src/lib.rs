//! Helpers for tests against real processes.

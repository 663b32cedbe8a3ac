//! The NATS tests' target: [`suite`] holds the tests, which run where a
//! real `nats-server` does (Unix).

#[cfg(unix)]
mod suite;
#[cfg(unix)]
#[path = "../support/mod.rs"]
mod support;

//! The NATS tests' target: [`suite`] holds the tests, which run where a
//! real `nats-server` does (Unix), under a harness of their own (see
//! `suite::main`): without the server they are reported as ignored.

#[cfg(unix)]
mod suite;
#[cfg(unix)]
#[path = "../support/mod.rs"]
mod support;

fn main() {
    #[cfg(unix)]
    suite::main();
}

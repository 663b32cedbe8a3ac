//! The interop suite's test target: [`suite`] holds the tests, which run
//! where the real servers do (Unix), under a harness of their own (see
//! `suite::main`): without the servers they are reported as ignored.

#[cfg(unix)]
mod suite;
#[cfg(unix)]
#[path = "../support/mod.rs"]
mod support;

fn main() {
    #[cfg(unix)]
    suite::main();
}

//! The interop suite's test target: [`suite`] holds the tests, which run
//! where the real servers do (Unix).

#[cfg(unix)]
#[path = "../support/mod.rs"]
mod support;
#[cfg(unix)]
mod suite;

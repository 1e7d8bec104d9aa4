//! Test support shared by salt's test suites.
//!
//! [`postgres::database`] gives a test a fresh, empty PostgreSQL database on loopback: on the
//! server named by `SALT_TEST_POSTGRES` (a `postgres://` URL) when that is set, otherwise on a
//! throwaway server this process starts from the machine's PostgreSQL binaries (Debian's
//! `postgresql` package) and stops when it exits.

pub mod postgres;

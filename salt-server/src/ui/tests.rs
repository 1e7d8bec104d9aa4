//! Tests of the UI pages through the router.

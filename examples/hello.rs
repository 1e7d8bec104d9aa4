//! The smallest complete salt program.
fn main() {}

/// Every variant is fatal.
#[derive(Debug, salt::Fatal)]
#[fatal]
enum Invalid {
    Empty,
    TooLong { len: usize },
}

/// Some variants are fatal.
#[derive(Debug, salt::Fatal)]
enum Fetch {
    #[fatal]
    NotFound(String),
    #[fatal]
    Forbidden,
    Unavailable { retry_after: u64 },
}

/// A struct: always fatal.
#[derive(Debug, salt::Fatal)]
struct Refused;

macro_rules! error {
    ($($t:ty),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{self:?}")
            }
        }
        impl std::error::Error for $t {}
    )*};
}
error!(Invalid, Fetch, Refused);

fn main() {
    use salt::{Error, ErrorKind, Fatal};
    assert!(Invalid::TooLong { len: 3 }.is_fatal() && Invalid::Empty.is_fatal());
    assert!(Fetch::NotFound("x".into()).is_fatal() && Fetch::Forbidden.is_fatal());
    assert!(!Fetch::Unavailable { retry_after: 1 }.is_fatal());
    assert_eq!(Error::from(Refused).kind(), ErrorKind::Fatal);
    assert_eq!(Error::from(Fetch::Unavailable { retry_after: 1 }).kind(), ErrorKind::Task);
}

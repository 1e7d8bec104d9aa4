/// No variant says it is fatal.
#[derive(Debug, salt::Fatal)]
enum Fetch {
    NotFound(String),
    Unavailable,
}

/// `#[fatal]` takes no arguments.
#[derive(Debug, salt::Fatal)]
enum Parse {
    #[fatal(always)]
    Syntax,
}

/// A generic type cannot be registered as one.
#[derive(Debug, salt::Fatal)]
struct Wrapped<E>(E);

fn main() {}

mod tasks {
    use salt::prelude::*;

    /// Adds one.
    #[task]
    pub async fn inc(x: i64) -> i64 {
        x + 1
    }
}

mod workflows {
    use salt::prelude::*;

    /// Calls a task of another module.
    #[workflow]
    pub async fn twice(x: i64) -> salt::Result<i64> {
        let once = crate::tasks::inc(x);
        crate::tasks::inc(once).await
    }
}

fn main() {
    let _ = workflows::twice(1i64);
}

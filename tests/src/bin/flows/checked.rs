//! Outputs checked against their schema and a `validate` function; inputs with defaults.

use salt::prelude::*;

use super::mark;

/// A score, its grade and its tags, each with the rules its schema declares.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Graded {
    /// Out of 100.
    #[schemars(range(min = 0, max = 100))]
    score: i64,
    /// One capital letter, A to F.
    #[schemars(regex(pattern = r"^[A-F]$"))]
    grade: String,
    /// One to three tags.
    #[schemars(length(min = 1, max = 3))]
    tags: Vec<String>,
}

/// Refuses an `F` for a score above 50.
fn consistent(graded: &Graded) -> Result<(), String> {
    if graded.grade == "F" && graded.score > 50 {
        return Err(format!("grade F for a score of {}", graded.score));
    }
    Ok(())
}

/// Returns what it is given, checked; retries would be allowed, but a refused output is not
/// retried.
#[task(validate = consistent, retries = 2, backoff = "10ms")]
async fn grade(dir: String, score: i64, grade: String, tags: Vec<String>) -> Graded {
    mark(&dir, "grade");
    Graded { score, grade, tags }
}

/// How a grading is done; every field has a default.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Settings {
    /// How many rounds.
    #[serde(default = "three")]
    rounds: u32,
    /// Whether to say more.
    #[serde(default)]
    verbose: bool,
}

fn three() -> u32 {
    3
}

/// What `graded` returns: the task's output and the settings it was run with.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Report {
    graded: Graded,
    settings: Settings,
    note: String,
}

/// Grades once, with `tags` (default `["plain"]`) and `settings` (its fields have defaults).
#[workflow]
async fn graded(
    dir: String,
    score: i64,
    grade: String,
    tags: Option<Vec<String>>,
    note: Option<String>,
    settings: Settings,
) -> salt::Result<Report> {
    let tags = tags.unwrap_or_else(|| vec!["plain".to_string()]);
    let graded = self::grade(dir, score, grade, tags).await?;
    Ok(Report { graded, settings, note: note.unwrap_or_default() })
}

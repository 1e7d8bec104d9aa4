//! [`Secret`]: an input whose value stays out of the store and out of every printed output.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeOwned, Deserializer};
use serde::ser::{self, SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The key of a secret's stored form, `{"$secret": "NAME"}`.
const KEY: &str = "$secret";

/// A value that a task needs but that must never be stored or shown: an API token, a password,
/// a private key.
///
/// A run stores its inputs, the arguments of each node and their outputs. A `Secret` is stored
/// as a reference to an environment variable, `{"$secret": "NAME"}`, never as its value; the
/// value is read from the environment of the process that decodes the input, right before the
/// body that takes it runs. So `show`, `logs`, `graph`, their `--json` forms and the database
/// itself only ever hold the name.
///
/// ```no_run
/// use salt::prelude::*;
/// use salt::Secret;
///
/// /// Posts a message with the token.
/// #[task(retries = 3)]
/// async fn post(message: String, token: Secret<String>) -> usize {
///     let _authorization = format!("Bearer {}", token.expose());
///     message.len()
/// }
///
/// /// Posts one message.
/// #[workflow(input = r#"{"message": "hi", "token": {"$secret": "CHAT_TOKEN"}}"#)]
/// async fn announce(message: String, token: Secret<String>) -> salt::Result<usize> {
///     post(message, token).await // the node's input holds {"$secret": "CHAT_TOKEN"}
/// }
/// ```
///
/// With `CHAT_TOKEN=… ./app run announce`, the token reaches `post` and nothing of it is
/// stored. Without the variable, `run` refuses the input before anything is stored, naming
/// the variable.
///
/// The variable is read where the input is decoded: by `run` itself when it checks the input,
/// and by the process that runs each body that takes the secret (the orchestrator with the
/// inline executor, a node process otherwise; node processes inherit the orchestrator's
/// environment). A run resumed by `recover`, `rerun` or `run-one` reads the variable again,
/// so it must be set for those commands too; its value may have changed in between (a rotated
/// token is picked up).
///
/// The value is an environment variable's text. A `Secret<String>` takes it as it is; any
/// other `T` decodes it as a JSON string first (`Secret<MyEnum>`), then as JSON text
/// (`Secret<u16>` from `8080`, `Secret<Credentials>` from `{"user": …, "password": …}`). Errors
/// never quote the value.
///
/// `Debug` and `Display` print `Secret(***)`, so a secret inside a logged struct does not leak
/// into the attempt's log. What the body does with [`Secret::expose`]'s value is up to it: a
/// body that prints it or returns it in its output puts it where any other value goes.
pub struct Secret<T> {
    name: Option<String>,
    value: T,
}

impl<T> Secret<T> {
    /// A secret with no environment variable behind it, for calling a task outside a run (in a
    /// plain test, where arguments are passed as they are). Such a secret cannot be stored: a
    /// run refuses to pass it to a node, with an error saying to use [`Secret::from_env`].
    pub fn new(value: T) -> Self {
        Self { name: None, value }
    }

    /// The value. Keep it in the body: whatever it is written to (a log line, an output)
    /// holds it in clear text.
    pub fn expose(&self) -> &T {
        &self.value
    }

    /// The value, taking the secret apart.
    pub fn into_exposed(self) -> T {
        self.value
    }

    /// The environment variable this secret was read from, or `None` for [`Secret::new`].
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

impl<T: DeserializeOwned> Secret<T> {
    /// The secret held by the environment variable `name`, as a body reads it when a
    /// `{"$secret": "NAME"}` input is decoded. An error of kind `input` when the variable is
    /// not set or does not decode as `T`; the message names the variable, never the value.
    pub fn from_env(name: &str) -> crate::Result<Self> {
        read_env(name).map_err(|m| crate::Error::new(crate::ErrorKind::Input, m))
    }
}

/// Reads and decodes the variable `name`; the error message names it and never quotes its value.
fn read_env<T: DeserializeOwned>(name: &str) -> Result<Secret<T>, String> {
    let raw = match std::env::var(name) {
        Ok(raw) => raw,
        Err(std::env::VarError::NotPresent) => {
            return Err(format!(
                "the environment variable `{name}` is not set: it holds a secret input ({{\"{KEY}\": \"{name}\"}}); \
                 set it in the environment of the salt command (`{name}=… ./app run …`)"
            ));
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(format!("the environment variable `{name}`, which holds a secret input, is not valid UTF-8"));
        }
    };
    let value =
        T::deserialize(Value::String(raw.clone())).or_else(|_| serde_json::from_str::<T>(&raw)).map_err(|_| {
            format!(
                "the secret in the environment variable `{name}` does not decode as `{}` (the value is not shown)",
                std::any::type_name::<T>()
            )
        })?;
    Ok(Secret { name: Some(name.to_owned()), value })
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<T: Clone> Clone for Secret<T> {
    fn clone(&self) -> Self {
        Self { name: self.name.clone(), value: self.value.clone() }
    }
}

/// Writes the reference, `{"$secret": "NAME"}`; never the value. A secret made by
/// [`Secret::new`] has no reference and fails to serialize.
impl<T> Serialize for Secret<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Some(name) = &self.name else {
            return Err(ser::Error::custom(
                "a Secret made by Secret::new has no environment variable behind it and cannot be stored; \
                 take it from the run's input ({\"$secret\": \"NAME\"}) or make it with Secret::from_env(\"NAME\")",
            ));
        };
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(KEY, name)?;
        map.end()
    }
}

/// Reads `{"$secret": "NAME"}` and then the variable `NAME`. Any other form is refused without
/// quoting it: a value written in place would be stored with the run's input.
impl<'de, T: DeserializeOwned> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let given = Value::deserialize(deserializer)?;
        let name = match &given {
            Value::Object(map) if map.len() == 1 => map.get(KEY).and_then(Value::as_str),
            _ => None,
        };
        let Some(name) = name else {
            return Err(de::Error::custom(format!(
                "a secret is given as {{\"{KEY}\": \"NAME\"}}, NAME an environment variable that holds it, \
                 not as its value (which would be stored with the run); got a {}",
                json_type(&given)
            )));
        };
        read_env(name).map_err(de::Error::custom)
    }
}

/// The JSON type of `value`, to say what was given without quoting it.
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "different object",
    }
}

/// The schema of the stored form: an object with one property, `$secret`, the name of an
/// environment variable.
impl<T> schemars::JsonSchema for Secret<T> {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("Secret")
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A secret, by the name of the environment variable that holds it; its value is never stored.",
            "type": "object",
            "properties": {
                "$secret": {
                    "description": "The environment variable that holds the secret.",
                    "type": "string",
                    "minLength": 1
                }
            },
            "required": ["$secret"],
            "additionalProperties": false
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_no_value() {
        let s = Secret::new("hunter2".to_owned());
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(format!("{s}"), "Secret(***)");
        assert_eq!(format!("{:?}", Some(&s)), "Some(Secret(***))");
    }

    #[test]
    fn unnamed_secret_does_not_serialize() {
        let e = serde_json::to_value(Secret::new("hunter2".to_owned())).unwrap_err().to_string();
        assert!(e.contains("Secret::from_env"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn a_value_in_place_is_refused_without_quoting_it() {
        let e = serde_json::from_value::<Secret<String>>(serde_json::json!("hunter2")).unwrap_err().to_string();
        assert!(e.starts_with("a secret is given as {\"$secret\": \"NAME\"}"), "{e}");
        assert!(e.ends_with("got a string"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let e = serde_json::from_value::<Secret<String>>(serde_json::json!({"$secret": "A", "b": 1})).unwrap_err();
        assert!(e.to_string().ends_with("got a different object"), "{e}");
    }

    #[test]
    fn a_missing_variable_is_named() {
        let name = "SALT_TEST_SECRET_THAT_IS_NEVER_SET";
        let e = serde_json::from_value::<Secret<String>>(serde_json::json!({"$secret": name})).unwrap_err();
        assert!(e.to_string().starts_with(&format!("the environment variable `{name}` is not set")), "{e}");
        let e = Secret::<String>::from_env(name).expect_err("an error");
        assert_eq!(e.kind(), crate::ErrorKind::Input);
    }

    #[test]
    fn reads_the_environment_and_stores_the_name() {
        // PATH is set in every environment tests run in.
        let path = std::env::var("PATH").unwrap();
        let s: Secret<String> = serde_json::from_value(serde_json::json!({"$secret": "PATH"})).unwrap();
        assert_eq!(s.expose(), &path);
        assert_eq!(s.name(), Some("PATH"));
        assert_eq!(serde_json::to_value(&s).unwrap(), serde_json::json!({"$secret": "PATH"}));
        let e = Secret::<u16>::from_env("PATH").expect_err("PATH is no number");
        assert!(e.to_string().contains("does not decode as `u16` (the value is not shown)"), "{e}");
        assert!(!e.to_string().contains(&path), "{e}");
    }

    #[test]
    fn schema_accepts_only_the_reference() {
        let schema = serde_json::to_value(schemars::schema_for!(Secret<String>)).unwrap();
        let ok = salt_runtime::registry::schema_problems(&schema, &serde_json::json!({"$secret": "X"})).unwrap();
        assert!(ok.is_empty(), "{ok:?}");
        let bad = salt_runtime::registry::schema_problems(&schema, &serde_json::json!({"token": "x"})).unwrap();
        assert!(!bad.is_empty());
    }
}

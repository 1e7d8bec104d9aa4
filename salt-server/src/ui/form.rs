//! HTML forms generated from a JSON Schema, and the JSON value read back from what a form
//! posts.
//!
//! An object's properties are fields (nested objects as fieldsets); booleans and enumerations
//! are selects, integers and numbers number inputs, strings text inputs; anything else (arrays,
//! maps, unions) a JSON text area. A field left empty is left out of its object, or `null`
//! where the schema allows `null`. The value read back is checked against the schema by
//! whoever takes it.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::esc;

/// The name of the form field of the whole value.
const ROOT: &str = "v";
/// How deep objects nest as fieldsets; deeper ones are JSON text areas.
const MAX_NEST: usize = 6;

enum Kind<'a> {
    Object(Vec<(&'a str, &'a Value, bool)>),
    Bool,
    Integer,
    Number,
    Text,
    Enum(Vec<Value>),
    Json,
}

/// Follows `$ref` (to `#/$defs/…` or `#/definitions/…`) and a lone `allOf`.
fn resolve<'a>(root: &'a Value, mut s: &'a Value) -> &'a Value {
    for _ in 0..16 {
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let Some(pointer) = r.strip_prefix('#') else { return s };
            match root.pointer(pointer) {
                Some(target) => s = target,
                None => return s,
            }
        } else if let Some([one]) = s.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
            s = one;
        } else {
            return s;
        }
    }
    s
}

fn is_null_schema(s: &Value) -> bool {
    s.get("type").and_then(Value::as_str) == Some("null") || s.get("const") == Some(&Value::Null)
}

/// The schema without its `null` alternative, and whether `null` is allowed.
fn non_null<'a>(root: &'a Value, s: &'a Value) -> (&'a Value, bool) {
    let s = resolve(root, s);
    for key in ["anyOf", "oneOf"] {
        if let Some(alts) = s.get(key).and_then(Value::as_array) {
            let rest: Vec<&Value> = alts.iter().filter(|a| !is_null_schema(a)).collect();
            if rest.len() == 1 && alts.len() == 2 {
                return (resolve(root, rest[0]), true);
            }
        }
    }
    let nullable = s.get("type").and_then(Value::as_array).is_some_and(|t| t.iter().any(|x| x == "null"));
    (s, nullable)
}

fn type_name(s: &Value) -> Option<&str> {
    match s.get("type") {
        Some(Value::String(t)) => Some(t),
        Some(Value::Array(ts)) => {
            let rest: Vec<&str> = ts.iter().filter_map(Value::as_str).filter(|t| *t != "null").collect();
            if rest.len() == 1 { Some(rest[0]) } else { None }
        }
        _ => None,
    }
}

fn kind<'a>(s: &'a Value, depth: usize) -> Kind<'a> {
    if let Some(values) = s.get("enum").and_then(Value::as_array) {
        return Kind::Enum(values.iter().filter(|v| !v.is_null()).cloned().collect());
    }
    if let Some(c) = s.get("const") {
        return Kind::Enum(vec![c.clone()]);
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(alts) = s.get(key).and_then(Value::as_array) {
            let consts: Option<Vec<Value>> = alts
                .iter()
                .filter(|a| !is_null_schema(a))
                .map(|a| {
                    a.get("const").cloned().or_else(|| {
                        a.get("enum").and_then(Value::as_array).filter(|e| e.len() == 1).map(|e| e[0].clone())
                    })
                })
                .collect();
            return match consts {
                Some(c) if !c.is_empty() => Kind::Enum(c),
                _ => Kind::Json,
            };
        }
    }
    match type_name(s) {
        Some("boolean") => Kind::Bool,
        Some("integer") => Kind::Integer,
        Some("number") => Kind::Number,
        Some("string") => Kind::Text,
        Some("object") | None if depth < MAX_NEST && s.get("properties").is_some_and(Value::is_object) => {
            let required: Vec<&str> = s
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let props = s["properties"]
                .as_object()
                .map(|p| p.iter().map(|(k, v)| (k.as_str(), v, required.contains(&k.as_str()))).collect())
                .unwrap_or_default();
            Kind::Object(props)
        }
        _ => Kind::Json,
    }
}

fn child_name(parent: &str, prop: &str) -> String {
    format!("{parent}/{}", prop.replace('~', "~0").replace('/', "~1"))
}

/// The path a field name stands for, for messages: `comment`, `address/city`, or `the value`.
fn path_of(name: &str) -> String {
    match name.strip_prefix("v/") {
        Some(rest) => rest.split('/').map(|p| p.replace("~1", "/").replace("~0", "~")).collect::<Vec<_>>().join("/"),
        None => "the value".into(),
    }
}

fn scalar_text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    }
}

/// The fields of a form for a value of `schema`, filled with `value` (or the schema's
/// defaults).
pub(super) fn fields(schema: &Value, value: Option<&Value>) -> String {
    let mut out = String::new();
    field(schema, schema, ROOT, "value", value, true, 0, &mut out);
    out
}

#[allow(clippy::too_many_arguments)]
fn field(
    root: &Value,
    s: &Value,
    name: &str,
    label: &str,
    value: Option<&Value>,
    required: bool,
    depth: usize,
    out: &mut String,
) {
    let (s, nullable) = non_null(root, s);
    let value = value.or_else(|| s.get("default"));
    let hint = s
        .get("description")
        .and_then(Value::as_str)
        .map(|d| format!(r#"<small class="hint">{}</small>"#, esc(d)))
        .unwrap_or_default();
    let star = if required && !nullable { r#" <span class="req" title="required">*</span>"# } else { "" };
    let n = esc(name);
    let l = esc(label);
    match kind(s, depth) {
        Kind::Object(props) => {
            if depth > 0 {
                out.push_str(&format!(r#"<fieldset data-field="{n}"><legend>{l}{star}</legend>{hint}"#));
            }
            for (prop, ps, req) in props {
                let v = value.and_then(|v| v.get(prop));
                field(root, ps, &child_name(name, prop), prop, v, req, depth + 1, out);
            }
            if depth > 0 {
                out.push_str("</fieldset>");
            }
        }
        Kind::Bool => {
            let current = value.and_then(Value::as_bool);
            let mut options = String::new();
            if !required || nullable || current.is_none() {
                options.push_str(r#"<option value="">—</option>"#);
            }
            for b in [true, false] {
                let sel = if current == Some(b) { " selected" } else { "" };
                options.push_str(&format!(r#"<option value="{b}"{sel}>{b}</option>"#));
            }
            out.push_str(&format!(
                r#"<label class="field" data-field="{n}"><span>{l}{star}</span><select name="{n}">{options}</select>{hint}</label>"#
            ));
        }
        Kind::Integer | Kind::Number => {
            let step = if matches!(kind(s, depth), Kind::Integer) { "1" } else { "any" };
            let mut bounds = String::new();
            if let Some(m) = s.get("minimum").filter(|m| m.is_number()) {
                bounds.push_str(&format!(r#" min="{m}""#));
            }
            if let Some(m) = s.get("maximum").filter(|m| m.is_number()) {
                bounds.push_str(&format!(r#" max="{m}""#));
            }
            out.push_str(&format!(
                r#"<label class="field" data-field="{n}"><span>{l}{star}</span><input type="number" step="{step}"{bounds} name="{n}" value="{}">{hint}</label>"#,
                esc(&scalar_text(value))
            ));
        }
        Kind::Text => {
            out.push_str(&format!(
                r#"<label class="field" data-field="{n}"><span>{l}{star}</span><input type="text" name="{n}" value="{}">{hint}</label>"#,
                esc(&scalar_text(value))
            ));
        }
        Kind::Enum(values) => {
            let mut options = String::new();
            if !required || nullable || value.is_none() {
                options.push_str(r#"<option value="">—</option>"#);
            }
            for v in values {
                let sel = if value == Some(&v) { " selected" } else { "" };
                let text = match &v {
                    Value::String(s) => s.clone(),
                    v => v.to_string(),
                };
                options.push_str(&format!(r#"<option value="{}"{sel}>{}</option>"#, esc(&v.to_string()), esc(&text)));
            }
            out.push_str(&format!(
                r#"<label class="field" data-field="{n}"><span>{l}{star}</span><select name="{n}">{options}</select>{hint}</label>"#
            ));
        }
        Kind::Json => {
            let text = value.map(|v| serde_json::to_string_pretty(v).unwrap_or_default()).unwrap_or_default();
            out.push_str(&format!(
                r#"<label class="field" data-field="{n}"><span>{l}{star} <small>(JSON)</small></span><textarea name="{n}" rows="4">{}</textarea>{hint}</label>"#,
                esc(&text)
            ));
        }
    }
}

/// The value a form generated by [`fields`] for `schema` posted; an error naming the field
/// when one cannot be read (a number that is not one, JSON that does not parse).
pub(super) fn read(schema: &Value, posted: &[(String, String)]) -> Result<Value, String> {
    let map: HashMap<&str, &str> = posted.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Ok(read_field(schema, schema, ROOT, &map, true, 0)?.unwrap_or(Value::Null))
}

fn read_field(
    root: &Value,
    s: &Value,
    name: &str,
    form: &HashMap<&str, &str>,
    required: bool,
    depth: usize,
) -> Result<Option<Value>, String> {
    let (s, nullable) = non_null(root, s);
    let text = form.get(name).copied().unwrap_or("");
    let empty = if required && nullable { Some(Value::Null) } else { None };
    let at = || path_of(name);
    Ok(match kind(s, depth) {
        Kind::Object(props) => {
            let mut object = Map::new();
            for (prop, ps, req) in props {
                if let Some(v) = read_field(root, ps, &child_name(name, prop), form, req, depth + 1)? {
                    object.insert(prop.to_string(), v);
                }
            }
            Some(Value::Object(object))
        }
        _ if text.trim().is_empty() && !matches!(kind(s, depth), Kind::Text) => empty,
        Kind::Text if text.is_empty() && (!required || nullable) => empty,
        Kind::Bool => match text {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => return Err(format!("{}: expected true or false", at())),
        },
        Kind::Integer => {
            let t = text.trim();
            let v = t
                .parse::<i64>()
                .map(Value::from)
                .or_else(|_| t.parse::<u64>().map(Value::from))
                .map_err(|_| format!("{}: `{t}` is not an integer", at()))?;
            Some(v)
        }
        Kind::Number => {
            let t = text.trim();
            let v = t
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .ok_or_else(|| format!("{}: `{t}` is not a number", at()))?;
            Some(Value::Number(v))
        }
        Kind::Text => Some(Value::String(text.to_string())),
        Kind::Enum(_) | Kind::Json => {
            Some(serde_json::from_str(text).map_err(|e| format!("{}: not valid JSON ({e})", at()))?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decision() -> Value {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "Decision",
            "type": "object",
            "properties": {
                "approved": {"type": "boolean", "description": "Whether to pay."},
                "by": {"type": "string"},
                "comment": {"type": ["string", "null"], "default": null},
                "level": {"$ref": "#/$defs/Level"},
                "tags": {"type": "array", "items": {"type": "string"}}
            },
            "required": ["approved", "by"],
            "$defs": {"Level": {"type": "string", "enum": ["low", "high"]}}
        })
    }

    fn posted(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_form_has_one_field_per_property_filled_with_the_value() {
        let html = fields(&decision(), Some(&json!({"approved": true, "by": "ada <admin>", "tags": ["x"]})));
        assert!(html.contains(r#"<select name="v/approved"><option value="true" selected>true</option>"#), "{html}");
        assert!(html.contains(r#"name="v/by" value="ada &lt;admin&gt;""#), "{html}");
        assert!(html.contains(r#"name="v/comment" value="""#), "{html}");
        assert!(html.contains(r#"<option value="&quot;high&quot;">high</option>"#), "{html}");
        assert!(html.contains("<textarea name=\"v/tags\" rows=\"4\">[\n  &quot;x&quot;\n]</textarea>"), "{html}");
        assert!(html.contains("Whether to pay."));
    }

    #[test]
    fn a_posted_form_reads_back_as_the_value() {
        let value = read(
            &decision(),
            &posted(&[
                ("v/approved", "true"),
                ("v/by", "ada"),
                ("v/comment", ""),
                ("v/level", "\"high\""),
                ("v/tags", "[\"a\"]"),
            ]),
        )
        .unwrap();
        assert_eq!(value, json!({"approved": true, "by": "ada", "level": "high", "tags": ["a"]}));
        let err = read(&decision(), &posted(&[("v/approved", "true"), ("v/by", "x"), ("v/tags", "[")])).unwrap_err();
        assert!(err.starts_with("tags: not valid JSON"), "{err}");
    }

    #[test]
    fn numbers_and_defaults() {
        let schema = json!({"type": "object", "properties": {"amount": {"type": "integer", "format": "uint64", "minimum": 0}}, "required": ["amount"]});
        let html = fields(&schema, Some(&json!({"amount": 1200})));
        assert!(html.contains(r#"<input type="number" step="1" min="0" name="v/amount" value="1200">"#), "{html}");
        assert_eq!(read(&schema, &posted(&[("v/amount", "15")])).unwrap(), json!({"amount": 15}));
        assert_eq!(read(&schema, &posted(&[("v/amount", "1.5")])).unwrap_err(), "amount: `1.5` is not an integer");
        // A value that is not an object is one JSON field.
        let any = json!({});
        assert_eq!(read(&any, &posted(&[("v", "[1, 2]")])).unwrap(), json!([1, 2]));
    }

    #[test]
    fn a_task_input_shows_its_defaults_and_its_options_may_stay_empty() {
        // The input schema of `graded(dir: String, note: Option<String>, settings: Settings)`,
        // `Settings` with serde defaults.
        let schema = json!({
            "type": "object",
            "properties": {
                "dir": {"type": "string"},
                "note": {"type": ["string", "null"], "default": null},
                "settings": {"$ref": "#/$defs/Settings"}
            },
            "required": ["dir", "settings"],
            "$defs": {"Settings": {"type": "object", "properties": {
                "rounds": {"type": "integer", "format": "uint32", "minimum": 0, "default": 3},
                "verbose": {"type": "boolean", "default": false}
            }}}
        });
        let html = fields(&schema, None);
        assert!(html.contains(r#"name="v/settings/rounds" value="3""#), "{html}");
        assert!(html.contains(r#"<option value="false" selected>false</option>"#), "{html}");
        assert!(html.contains(r#"name="v/note" value="""#), "{html}");
        let value = read(
            &schema,
            &posted(&[("v/dir", "/tmp"), ("v/note", ""), ("v/settings/rounds", "3"), ("v/settings/verbose", "false")]),
        )
        .unwrap();
        // The empty option is left out: the task gets `None`.
        assert_eq!(value, json!({"dir": "/tmp", "settings": {"rounds": 3, "verbose": false}}));
    }
}

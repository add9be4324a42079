//! Partial responses: the 2.0 `fields` query parameter.
//!
//! `fields` is a comma-separated list of dotted paths. Arrays are walked transparently
//! (`values.slug` selects `slug` in every element of `values`); `*` matches every key of an
//! object. Plain paths select only those paths; `+path` adds a path (also one hidden by
//! default, such as `values.user.email`) to whatever else is selected; `-path` removes one.

use serde_json::{Map, Value};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelection {
    pub include: Vec<Vec<String>>,
    pub add: Vec<Vec<String>>,
    pub remove: Vec<Vec<String>>,
}

fn split_path(p: &str) -> Vec<String> {
    p.split('.').map(str::to_string).collect()
}

impl FieldSelection {
    pub fn parse(fields: &str) -> FieldSelection {
        let mut sel = FieldSelection::default();
        for part in fields.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            if let Some(p) = part.strip_prefix('+') {
                sel.add.push(split_path(p.trim()));
            } else if let Some(p) = part.strip_prefix('-') {
                sel.remove.push(split_path(p.trim()));
            } else {
                sel.include.push(split_path(part));
            }
        }
        sel
    }
}

/// The part of `value` selected by `paths`; `None` when nothing matched.
fn include(value: &Value, paths: &[&[String]]) -> Option<Value> {
    if paths.iter().any(|p| p.is_empty()) {
        return Some(value.clone());
    }
    match value {
        Value::Array(items) => Some(Value::Array(
            items
                .iter()
                .map(|v| include(v, paths).unwrap_or_else(|| Value::Object(Map::new())))
                .collect(),
        )),
        Value::Object(obj) => {
            let mut out = Map::new();
            for (k, v) in obj {
                let tails: Vec<&[String]> = paths
                    .iter()
                    .filter(|p| p.first().map(|s| s == k || s == "*").unwrap_or(false))
                    .map(|p| &p[1..])
                    .collect();
                if tails.is_empty() {
                    continue;
                }
                if let Some(sub) = include(v, &tails) {
                    out.insert(k.clone(), sub);
                }
            }
            if out.is_empty() {
                None
            } else {
                Some(Value::Object(out))
            }
        }
        _ => None,
    }
}

/// Deep merge of `b` into `a` (objects by key, arrays element-wise).
fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (x, y) in a.iter_mut().zip(b) {
                merge(x, y);
            }
        }
        (a, b) => *a = b,
    }
}

/// Removes one dotted path (arrays walked transparently, `*` = every key).
pub fn remove(value: &mut Value, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    match value {
        Value::Array(items) => {
            for v in items {
                remove(v, path);
            }
        }
        Value::Object(obj) => {
            if rest.is_empty() {
                if first == "*" {
                    obj.clear();
                } else {
                    obj.remove(first);
                }
            } else if first == "*" {
                for v in obj.values_mut() {
                    remove(v, rest);
                }
            } else if let Some(v) = obj.get_mut(first) {
                remove(v, rest);
            }
        }
        _ => {}
    }
}

/// Applies `fields` to a full response. `hidden` lists dotted paths that are present in
/// `full` but left out unless explicitly requested (e.g. `values.user.email`).
pub fn apply(full: &Value, hidden: &[&str], fields: Option<&str>) -> Value {
    let mut default = full.clone();
    for h in hidden {
        remove(&mut default, &split_path(h));
    }
    let Some(fields) = fields else {
        return default;
    };
    let sel = FieldSelection::parse(fields);
    let mut out = if sel.include.is_empty() {
        default
    } else {
        let paths: Vec<&[String]> = sel.include.iter().map(Vec::as_slice).collect();
        include(full, &paths).unwrap_or_else(|| Value::Object(Map::new()))
    };
    if !sel.add.is_empty() {
        let paths: Vec<&[String]> = sel.add.iter().map(Vec::as_slice).collect();
        if let Some(extra) = include(full, &paths) {
            merge(&mut out, extra);
        }
    }
    for r in &sel.remove {
        remove(&mut out, r);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn page() -> Value {
        json!({
            "pagelen": 2, "size": 3, "page": 1, "next": "http://x/2.0/r?page=2",
            "values": [
                {"slug": "a", "name": "A", "project": {"key": "P", "name": "Proj"}, "user": {"email": "a@x", "nickname": "a"}},
                {"slug": "b", "name": "B", "project": {"key": "Q", "name": "Q"}, "user": {"nickname": "b"}}
            ]
        })
    }

    #[test]
    fn include_only() {
        let v = apply(&page(), &[], Some("next,values.slug,values.project.key"));
        assert_eq!(
            v,
            json!({"next": "http://x/2.0/r?page=2",
                   "values": [{"slug": "a", "project": {"key": "P"}}, {"slug": "b", "project": {"key": "Q"}}]})
        );
    }

    #[test]
    fn hidden_and_plus() {
        let hidden = ["values.user.email"];
        let v = apply(&page(), &hidden, None);
        assert!(v["values"][0]["user"].get("email").is_none());
        let v = apply(&page(), &hidden, Some("+values.user.email"));
        assert_eq!(v["values"][0]["user"]["email"], "a@x");
        assert_eq!(v["values"][0]["name"], "A");
        assert!(v["values"][1]["user"].get("email").is_none());
    }

    #[test]
    fn minus_and_wildcard() {
        let v = apply(&page(), &[], Some("-values.project,-size"));
        assert!(v.get("size").is_none());
        assert!(v["values"][0].get("project").is_none());
        assert_eq!(v["values"][0]["slug"], "a");
        let v = apply(&page(), &[], Some("values.project.*"));
        assert_eq!(v["values"][1]["project"], json!({"key": "Q", "name": "Q"}));
        assert!(v.get("next").is_none());
    }

    #[test]
    fn include_of_missing_path_keeps_shape() {
        let v = apply(&json!({"values": []}), &[], Some("values.slug,next"));
        assert_eq!(v, json!({"values": []}));
    }
}

//! In-process structural checks of a rendered document (`render --check`).

use serde_json::Value;

use crate::jinja::unescape;
use crate::paths;
use crate::yaml::HEADER;

/// Checks the structure of a rendered document without running anything: the header, that
/// it parses as YAML (before and after undoing our Jinja escapes), the top-level keys and
/// their order, `write_files` entries (absolute paths, quoted octal permissions, owner,
/// string content), `runcmd` entries (strings or lists of strings), a non-empty `bootcmd`
/// if present, and that `runcmd` ends the bootstrap with the sentinel step. Returns every
/// problem found.
pub fn check(rendered: &str) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    if !rendered.starts_with(HEADER) {
        problems.push(format!("the document does not start with {HEADER:?}"));
    }
    let unescaped = unescape(rendered);
    for (what, text) in [("as written", rendered), ("after Jinja rendering", &*unescaped)] {
        match serde_saphyr::from_str::<Value>(text) {
            Ok(value) => {
                if what == "as written" {
                    check_value(&value, &mut problems);
                }
            }
            Err(e) => problems.push(format!("the document does not parse as YAML {what}: {e}")),
        }
    }
    let keys: Vec<&str> = rendered
        .lines()
        .filter(|l| !l.starts_with([' ', '-', '#']) && !l.is_empty())
        .filter_map(|l| l.split_once(':').map(|(k, _)| k))
        .collect();
    let expected: &[&str] = if keys.contains(&"bootcmd") {
        &["write_files", "runcmd", "bootcmd"]
    } else {
        &["write_files", "runcmd"]
    };
    if keys != expected {
        problems.push(format!(
            "top-level keys are {keys:?}, expected {expected:?} in this order"
        ));
    }
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

fn check_value(value: &Value, problems: &mut Vec<String>) {
    let Some(map) = value.as_object() else {
        problems.push("the document is not a YAML mapping".into());
        return;
    };
    for key in map.keys() {
        if !matches!(key.as_str(), "write_files" | "runcmd" | "bootcmd") {
            problems.push(format!("unexpected top-level key {key:?}"));
        }
    }
    match map.get("write_files").map(Value::as_array) {
        Some(Some(files)) => {
            for (i, f) in files.iter().enumerate() {
                check_file(i, f, problems);
            }
        }
        _ => problems.push("write_files is missing or not a list".into()),
    }
    match map.get("runcmd").map(Value::as_array) {
        Some(Some(entries)) => {
            for (i, e) in entries.iter().enumerate() {
                let ok = match e {
                    Value::String(_) => true,
                    Value::Array(items) => !items.is_empty() && items.iter().all(Value::is_string),
                    _ => false,
                };
                if !ok {
                    problems.push(format!(
                        "runcmd[{i}] is neither a string nor a non-empty list of strings"
                    ));
                }
            }
            let sentinel = [".", &paths::script("99-bootstrap-complete.sh")];
            let has_sentinel = entries.iter().any(|e| {
                e.as_array()
                    .is_some_and(|a| a.iter().map(Value::as_str).eq(sentinel.iter().map(|s| Some(*s))))
            });
            if !has_sentinel {
                problems.push("runcmd never reaches the bootstrap-complete step".into());
            }
        }
        _ => problems.push("runcmd is missing or not a list".into()),
    }
    if let Some(boot) = map.get("bootcmd") {
        match boot.as_array() {
            Some(b) if !b.is_empty() && b.iter().all(Value::is_string) => {}
            _ => problems.push("bootcmd is present but not a non-empty list of strings".into()),
        }
    }
}

fn check_file(i: usize, file: &Value, problems: &mut Vec<String>) {
    let Some(f) = file.as_object() else {
        problems.push(format!("write_files[{i}] is not a mapping"));
        return;
    };
    for key in f.keys() {
        if !matches!(key.as_str(), "path" | "permissions" | "owner" | "content") {
            problems.push(format!("write_files[{i}] has an unexpected key {key:?}"));
        }
    }
    match f.get("path").and_then(Value::as_str) {
        Some(p) if p.starts_with('/') => {}
        _ => problems.push(format!("write_files[{i}].path is not an absolute path")),
    }
    match f.get("permissions") {
        Some(Value::String(p)) if crate::validate::permissions(p) => {}
        Some(Value::String(_)) => problems.push(format!("write_files[{i}].permissions is not octal")),
        _ => problems.push(format!("write_files[{i}].permissions is not a quoted string")),
    }
    if !f.get("owner").is_some_and(Value::is_string) {
        problems.push(format!("write_files[{i}].owner is not a string"));
    }
    if !f.get("content").is_some_and(Value::is_string) {
        problems.push(format!("write_files[{i}].content is not a string"));
    }
}

//! The user-data a machine boots with, read as cloud-init reads it.
//!
//! 1. **Jinja.** A first line `## template: jinja` makes cloud-init render the rest as a
//!    Jinja template with the instance data. The simulator renders the subset our documents
//!    and typical users' commands use: expressions that are a string literal (`{{ '{{' }}`,
//!    the bootstrap provider's escapes) or a dotted instance-data variable
//!    (`{{ ds.meta_data.local_hostname }}`, `{{ v1.instance_id }}`; unknown ones render as
//!    cloud-init's `CI_MISSING_JINJA_VAR/<name>`), and comments (with `trim_blocks`).
//!    Statements (`{% … %}`), filters and other expressions are refused with a clear error
//!    rather than rendered wrongly.
//! 2. **Header.** The rendered text must start with `#cloud-config`.
//! 3. **YAML.** It must parse, and be a mapping.
//! 4. **Modules.** `write_files`: a list of mappings with an absolute `path`, a string
//!    `content`, `permissions` an octal string (or a YAML integer), `owner` a string,
//!    `encoding` plain or base64, `append`/`defer` booleans; `runcmd`/`bootcmd`: lists of
//!    strings (run verbatim) and lists of scalars (each single-quoted, then joined), as
//!    cloud-init's `shellify` does. Anything else cloud-init would refuse is an error here.

use std::fmt;

use base64::Engine as _;
use serde_json::Value;

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CloudConfigError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, CloudConfigError> {
    Err(CloudConfigError(msg.into()))
}

/// Instance data available to Jinja templates.
#[derive(Debug, Clone, Default)]
pub struct InstanceData {
    /// `v1.local_hostname`, `ds.meta_data.local_hostname`.
    pub local_hostname: String,
    /// `v1.instance_id`, `ds.meta_data.instance_id`.
    pub instance_id: String,
    /// `v1.availability_zone` (the failure domain), may be empty.
    pub availability_zone: String,
    /// The machine's address (`ds.meta_data.local_ipv4`).
    pub local_ipv4: String,
}

impl InstanceData {
    fn lookup(&self, path: &str) -> Option<String> {
        let v1 = |key: &str| -> Option<String> {
            Some(match key {
                "local_hostname" | "local-hostname" => self.local_hostname.clone(),
                "instance_id" | "instance-id" => self.instance_id.clone(),
                "availability_zone" | "availability-zone" => self.availability_zone.clone(),
                "cloud_name" | "cloud-name" | "platform" => "sim".into(),
                "region" => String::new(),
                "distro" => "ubuntu".into(),
                "distro_release" | "distro-release" => "noble".into(),
                "machine" => "x86_64".into(),
                _ => return None,
            })
        };
        if let Some(rest) = path.strip_prefix("v1.") {
            return v1(rest);
        }
        if let Some(rest) = path.strip_prefix("ds.meta_data.") {
            return match rest {
                "local_ipv4" | "local-ipv4" => Some(self.local_ipv4.clone()),
                other => v1(other),
            };
        }
        if !path.contains('.') {
            return v1(path);
        }
        None
    }
}

/// One `runcmd`/`bootcmd` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A list: each element single-quoted, joined with spaces.
    Argv(Vec<String>),
    /// A string: copied verbatim.
    Shell(String),
}

/// One `write_files` entry, decoded.
#[derive(Clone, PartialEq, Eq)]
pub struct File {
    /// Absolute, normalised path (no `.`/`..` components).
    pub path: String,
    /// Decoded content.
    pub content: Vec<u8>,
    /// Mode bits.
    pub mode: u32,
    /// `user:group`.
    pub owner: String,
    /// Append instead of replacing.
    pub append: bool,
}

impl fmt::Debug for File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("File")
            .field("path", &self.path)
            .field("content", &format_args!("<{} bytes>", self.content.len()))
            .field("mode", &format_args!("{:04o}", self.mode))
            .field("owner", &self.owner)
            .field("append", &self.append)
            .finish()
    }
}

/// A parsed cloud-config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloudConfig {
    /// `write_files`, in order.
    pub write_files: Vec<File>,
    /// `runcmd`, in order.
    pub runcmd: Vec<Command>,
    /// `bootcmd`, in order.
    pub bootcmd: Vec<Command>,
    /// Non-fatal findings (cloud-init would log a warning).
    pub warnings: Vec<String>,
}

/// Parses user-data as cloud-init would (see the module docs).
pub fn parse(user_data: &str, instance: &InstanceData) -> Result<CloudConfig, CloudConfigError> {
    let (first, rest) = user_data.split_once('\n').unwrap_or((user_data, ""));
    let rendered = if is_jinja_header(first) {
        render_jinja(rest, instance)?
    } else {
        user_data.to_string()
    };
    if !rendered.starts_with("#cloud-config") {
        return err(format!(
            "the user-data does not start with #cloud-config (after Jinja rendering: {:?}); cloud-init would not \
             treat it as a cloud-config",
            rendered.lines().next().unwrap_or("")
        ));
    }
    let value: Value = serde_saphyr::from_str(&rendered)
        .map_err(|e| CloudConfigError(format!("the cloud-config is not valid YAML: {e}")))?;
    let Value::Object(map) = value else {
        return err("the cloud-config is not a YAML mapping");
    };
    let mut config = CloudConfig::default();
    if let Some(files) = map.get("write_files") {
        let Value::Array(files) = files else {
            return err("write_files is not a list");
        };
        for (i, f) in files.iter().enumerate() {
            config.write_files.push(file(i, f, &mut config.warnings)?);
        }
    }
    for (key, out) in [("runcmd", &mut config.runcmd), ("bootcmd", &mut config.bootcmd)] {
        match map.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Array(entries)) => {
                for (i, e) in entries.iter().enumerate() {
                    out.push(command(key, i, e)?);
                }
            }
            Some(_) => return err(format!("{key} is not a list")),
        }
    }
    Ok(config)
}

fn is_jinja_header(line: &str) -> bool {
    let l = line.trim_end_matches('\r');
    let Some(rest) = l.strip_prefix("##") else {
        return false;
    };
    let rest = rest.trim_start();
    let Some(rest) = rest.strip_prefix("template:") else {
        return false;
    };
    rest.trim().eq_ignore_ascii_case("jinja")
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "True" } else { "False" }.to_string()),
        _ => None,
    }
}

fn command(key: &str, i: usize, e: &Value) -> Result<Command, CloudConfigError> {
    match e {
        Value::String(s) => Ok(Command::Shell(s.clone())),
        Value::Array(items) => items
            .iter()
            .map(|x| {
                scalar(x).ok_or_else(|| CloudConfigError(format!("{key}[{i}] has an element that is not a scalar")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Command::Argv),
        _ => err(format!("{key}[{i}] is neither a string nor a list")),
    }
}

fn file(i: usize, f: &Value, warnings: &mut Vec<String>) -> Result<File, CloudConfigError> {
    let Value::Object(f) = f else {
        return err(format!("write_files[{i}] is not a mapping"));
    };
    for key in f.keys() {
        if !matches!(
            key.as_str(),
            "path" | "content" | "permissions" | "owner" | "encoding" | "append" | "defer"
        ) {
            if key == "source" {
                return err(format!(
                    "write_files[{i}]: `source` (download) is not supported by the simulator"
                ));
            }
            warnings.push(format!("write_files[{i}]: unknown key {key:?} ignored"));
        }
    }
    let path = match f.get("path") {
        Some(Value::String(p)) if !p.is_empty() => normalise(p).ok_or_else(|| {
            CloudConfigError(format!(
                "write_files[{i}].path {p:?} is not an absolute path without `..`"
            ))
        })?,
        _ => return err(format!("write_files[{i}] has no path (a string)")),
    };
    let content = match f.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return err(format!("write_files[{i}] ({path}): content is not a string")),
    };
    let content = match f.get("encoding").map(|e| e.as_str()) {
        None | Some(Some("text/plain")) => content.into_bytes(),
        Some(Some("b64" | "base64")) => base64::engine::general_purpose::STANDARD
            .decode(content.trim().replace(['\n', '\r', ' '], ""))
            .map_err(|e| CloudConfigError(format!("write_files[{i}] ({path}): invalid base64 content: {e}")))?,
        Some(Some(enc @ ("gz" | "gzip" | "gz+base64" | "gzip+base64" | "gz+b64" | "gzip+b64"))) => {
            return err(format!(
                "write_files[{i}] ({path}): encoding {enc} is not supported by the simulator"
            ));
        }
        Some(other) => return err(format!("write_files[{i}] ({path}): unknown encoding {other:?}")),
    };
    let mode = match f.get("permissions") {
        None | Some(Value::Null) => 0o644,
        Some(Value::String(p)) => parse_mode(p).ok_or_else(|| {
            CloudConfigError(format!(
                "write_files[{i}] ({path}): permissions {p:?} are not an octal number"
            ))
        })?,
        // PyYAML (YAML 1.1) reads an unquoted 0644 as the octal number; a YAML 1.2 parser
        // gives 644: take its digits as octal, as cloud-init ends up doing.
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| parse_mode(&n.to_string()))
            .ok_or_else(|| CloudConfigError(format!("write_files[{i}] ({path}): permissions {n} are not octal")))?,
        Some(_) => return err(format!("write_files[{i}] ({path}): permissions are not a string")),
    };
    let owner = match f.get("owner") {
        None | Some(Value::Null) => "root:root".to_string(),
        Some(Value::String(o)) if !o.is_empty() => o.clone(),
        Some(_) => return err(format!("write_files[{i}] ({path}): owner is not a string")),
    };
    let flag = |key: &str| -> Result<bool, CloudConfigError> {
        match f.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => err(format!("write_files[{i}] ({path}): {key} is not a boolean")),
        }
    };
    let append = flag("append")?;
    flag("defer")?;
    Ok(File {
        path,
        content,
        mode,
        owner,
        append,
    })
}

/// Octal permissions (`0644`, `644`, `0o644`, `1777`), at most 4 digits.
fn parse_mode(p: &str) -> Option<u32> {
    let p = p.trim();
    let digits = p.strip_prefix("0o").unwrap_or(p);
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    let mode = u32::from_str_radix(digits, 8).ok()?;
    (mode <= 0o7777).then_some(mode)
}

/// `/a/./b//c` → `/a/b/c`; `None` for a relative path or one with `..`.
pub fn normalise(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return None;
    }
    let mut parts = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return None;
    }
    Some(format!("/{}", parts.join("/")))
}

/// cloud-init's `util.shellify`: `#!/bin/sh`, then one line per entry: strings verbatim,
/// lists with each element single-quoted (`'` written as `'\''`) and joined with spaces.
pub fn shellify(entries: &[Command]) -> String {
    let mut script = String::from("#!/bin/sh\n");
    for e in entries {
        match e {
            Command::Shell(s) => script.push_str(s),
            Command::Argv(args) => {
                let words: Vec<String> = args.iter().map(|a| format!("'{}'", a.replace('\'', "'\\''"))).collect();
                script.push_str(&words.join(" "));
            }
        }
        script.push('\n');
    }
    script
}

/// Renders the Jinja subset described in the module docs.
pub fn render_jinja(text: &str, instance: &InstanceData) -> Result<String, CloudConfigError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let Some(pos) = find_open(rest) else {
            out.push_str(rest);
            return Ok(out);
        };
        out.push_str(&rest[..pos]);
        let tag = &rest[pos..];
        match &tag[..2] {
            "{#" => {
                let Some(end) = tag.find("#}") else {
                    return err(format!("unterminated Jinja comment near {:?}", excerpt(tag)));
                };
                rest = &tag[end + 2..];
                // trim_blocks: the newline right after a comment goes.
                rest = rest.strip_prefix('\n').unwrap_or(rest);
            }
            "{%" => {
                return err(format!(
                    "Jinja statement {:?}: the simulator renders only expressions and comments",
                    excerpt(tag)
                ));
            }
            _ => {
                let (value, used) = expression(&tag[2..], instance)?;
                out.push_str(&value);
                rest = &tag[2 + used..];
            }
        }
    }
}

fn excerpt(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(60).collect()
}

fn find_open(text: &str) -> Option<usize> {
    text.as_bytes()
        .windows(2)
        .position(|w| w[0] == b'{' && matches!(w[1], b'{' | b'%' | b'#'))
}

/// Evaluates the expression starting right after `{{`; returns its value and the bytes
/// used up to and including the closing `}}`.
fn expression(s: &str, instance: &InstanceData) -> Result<(String, usize), CloudConfigError> {
    // Find the closing `}}` outside string literals.
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    let end = loop {
        if i + 1 >= bytes.len() {
            return err(format!("unterminated Jinja expression near {:?}", excerpt(s)));
        }
        let b = bytes[i];
        match quote {
            Some(_) if b == b'\\' => i += 1,
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'\'' || b == b'"' => quote = Some(b),
            None if b == b'}' && bytes[i + 1] == b'}' => break i,
            None => {}
        }
        i += 1;
    };
    let expr = s[..end].trim();
    let value = if let Some(lit) = string_literal(expr) {
        lit
    } else if !expr.is_empty()
        && expr
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
    {
        instance
            .lookup(expr)
            .unwrap_or_else(|| format!("CI_MISSING_JINJA_VAR/{}", expr.rsplit('.').next().unwrap_or(expr)))
    } else {
        return err(format!(
            "Jinja expression {{{{ {expr} }}}}: the simulator renders only string literals and instance-data variables"
        ));
    };
    Ok((value, end + 2))
}

fn string_literal(expr: &str) -> Option<String> {
    let q = expr.chars().next()?;
    if (q != '\'' && q != '"') || expr.len() < 2 || !expr.ends_with(q) {
        return None;
    }
    let inner = &expr[1..expr.len() - 1];
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                other => out.push(other),
            }
        } else if c == q {
            return None; // two literals, or something else
        } else {
            out.push(c);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn inst() -> InstanceData {
        InstanceData {
            local_hostname: "node-1".into(),
            instance_id: "i-1".into(),
            availability_zone: "fd1".into(),
            local_ipv4: "127.1.0.1".into(),
        }
    }

    #[test]
    fn renders_escapes_variables_and_comments() {
        let t = "a {{ '{{' }} b {{ ds.meta_data.local_hostname }} {{v1.instance_id}} {{ nope.x }}\n{# c #}\nd";
        assert_eq!(
            render_jinja(t, &inst()).unwrap(),
            "a {{ b node-1 i-1 CI_MISSING_JINJA_VAR/x\nd"
        );
        assert_eq!(render_jinja("{{ \"}}\" }}", &inst()).unwrap(), "}}");
        assert!(render_jinja("{% if x %}y{% endif %}", &inst()).is_err());
        assert!(render_jinja("{{ x | upper }}", &inst()).is_err());
        assert!(render_jinja("{{ x", &inst()).is_err());
    }

    #[test]
    fn parses_a_rendered_document() {
        let doc = "## template: jinja\n#cloud-config\nwrite_files:\n- path: /capi/etc/token\n  permissions: \"0600\"\n  owner: root:root\n  content: \"a{{ '{{' }}b\"\nruncmd:\n- [\"/capi-scripts/x.sh\", \"it's\"]\n- echo {{ v1.local_hostname }}\n";
        let c = parse(doc, &inst()).unwrap();
        assert_eq!(c.write_files.len(), 1);
        assert_eq!(c.write_files[0].content, b"a{{b");
        assert_eq!(c.write_files[0].mode, 0o600);
        assert_eq!(
            shellify(&c.runcmd),
            "#!/bin/sh\n'/capi-scripts/x.sh' 'it'\\''s'\necho node-1\n"
        );
    }

    #[test]
    fn refuses_what_cloud_init_refuses() {
        let i = inst();
        for (doc, what) in [
            ("#!/bin/sh\necho hi\n", "#cloud-config"),
            ("## template: jinja\necho\n", "#cloud-config"),
            ("#cloud-config\n- a\n", "mapping"),
            ("#cloud-config\nruncmd: [\n", "YAML"),
            ("#cloud-config\nwrite_files: {}\n", "not a list"),
            ("#cloud-config\nwrite_files:\n- content: x\n", "no path"),
            ("#cloud-config\nwrite_files:\n- path: rel/x\n", "absolute"),
            ("#cloud-config\nwrite_files:\n- path: /a/../etc/x\n", "absolute"),
            (
                "#cloud-config\nwrite_files:\n- path: /x\n  permissions: \"rwx\"\n",
                "octal",
            ),
            (
                "#cloud-config\nwrite_files:\n- path: /x\n  permissions: \"0999\"\n",
                "octal",
            ),
            ("#cloud-config\nwrite_files:\n- path: /x\n  encoding: gzip\n", "gzip"),
            ("#cloud-config\nruncmd:\n- {a: b}\n", "neither"),
            ("#cloud-config\nruncmd: echo\n", "not a list"),
        ] {
            let e = parse(doc, &i).unwrap_err();
            assert!(e.0.contains(what), "{doc:?}: {e}");
        }
    }

    #[test]
    fn modes_and_paths() {
        assert_eq!(parse_mode("0644"), Some(0o644));
        assert_eq!(parse_mode("755"), Some(0o755));
        assert_eq!(parse_mode("0o700"), Some(0o700));
        assert_eq!(parse_mode(""), None);
        assert_eq!(normalise("/a//b/./c"), Some("/a/b/c".into()));
        assert_eq!(normalise("/"), None);
    }
}

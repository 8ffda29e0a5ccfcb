//! Writing a [`CloudConfig`] as a `## template: jinja` cloud-config document.
//!
//! Scalar styles, chosen so that cloud-init's Jinja rendering and YAML parsing give back
//! exactly the values of the model:
//! - generated values and file contents are [escaped](crate::jinja::escape) first; the
//!   escape forms survive every style used here;
//! - multi-line values are literal blocks (`|`), verbatim;
//! - `runcmd` argument vectors are flow sequences of double-quoted scalars, i.e. JSON
//!   arrays (`["/capi-scripts/40-join.sh", "--worker", "10.0.0.1:30000/…"]`): every YAML
//!   parser reads them the same (old PyYAML rejects `:` in plain flow scalars, and YAML 1.1
//!   would read `yes` or `0700` as other types);
//! - `permissions` are always double-quoted;
//! - users' command lines stay raw and are literal blocks whenever double quoting would
//!   have to escape a character (`"`, `\`, tab) inside a Jinja expression they may hold; a
//!   final Jinja block tag or comment gets an empty expression after it so that
//!   `trim_blocks` cannot eat the line break that ends the entry
//!   ([`guard_trailing_tag`](crate::jinja::guard_trailing_tag));
//! - the single-quoted style (which doubles `'`) is never used for more than one-character
//!   values, and folding of long lines is off.

use serde::Serialize;
use serde_saphyr::{DoubleQuoted, FlowSeq, LitString};

use crate::error::RenderError;
use crate::jinja::{escape, guard_trailing_tag};
use crate::model::{CloudConfig, RunCmd};

/// The first two lines of every document.
pub const HEADER: &str = "## template: jinja\n#cloud-config\n";

#[derive(Serialize)]
struct Document {
    write_files: Vec<File>,
    runcmd: Vec<Entry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    bootcmd: Vec<Text>,
}

#[derive(Serialize)]
struct File {
    path: String,
    permissions: DoubleQuoted<String>,
    owner: String,
    content: Text,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Entry {
    Argv(FlowSeq<Vec<DoubleQuoted<String>>>),
    Shell(Text),
}

#[derive(Serialize)]
#[serde(untagged)]
enum Text {
    Auto(String),
    Literal(LitString),
}

/// A value we generate (escaped): literal block when multi-line.
fn generated(value: &str) -> Text {
    let escaped = escape(value).into_owned();
    if escaped.contains('\n') {
        Text::Literal(LitString(escaped))
    } else {
        Text::Auto(escaped)
    }
}

/// A user's template file content (raw, each line guarded, see [`guard_trailing_tag`]):
/// literal block when multi-line.
fn template(value: &str) -> Text {
    let guarded: String = value.split_inclusive('\n').map(guard_trailing_tag).collect();
    if guarded.contains('\n') {
        Text::Literal(LitString(guarded))
    } else {
        Text::Auto(guarded)
    }
}

/// A user's command line (raw, see [`guard_trailing_tag`]): literal block unless the
/// automatic style keeps it verbatim.
fn raw(value: &str) -> Text {
    let value = guard_trailing_tag(value).into_owned();
    if !value.is_empty() && value.contains(['\n', '"', '\\', '\t']) {
        Text::Literal(LitString(value))
    } else {
        Text::Auto(value)
    }
}

impl CloudConfig {
    /// The user-data document: [`HEADER`] followed by the YAML mapping with the keys
    /// `write_files`, `runcmd` and, only when there are boot commands, `bootcmd`.
    pub fn to_document(&self) -> Result<String, RenderError> {
        let document = Document {
            write_files: self
                .write_files
                .iter()
                .map(|f| File {
                    path: escape(&f.path).into_owned(),
                    permissions: DoubleQuoted(escape(&f.permissions).into_owned()),
                    owner: escape(&f.owner).into_owned(),
                    content: if f.template {
                        template(&f.content)
                    } else {
                        generated(&f.content)
                    },
                })
                .collect(),
            runcmd: self
                .runcmd
                .iter()
                .map(|entry| match entry {
                    RunCmd::Argv(argv) => Entry::Argv(FlowSeq(
                        argv.iter().map(|a| DoubleQuoted(escape(a).into_owned())).collect(),
                    )),
                    RunCmd::Shell(command) => Entry::Shell(raw(command)),
                })
                .collect(),
            bootcmd: self.bootcmd.iter().map(|c| raw(c)).collect(),
        };
        let options = serde_saphyr::ser_options! {
            min_fold_chars: 0,
            folded_wrap_chars: usize::MAX,
        };
        let mut out = String::from(HEADER);
        serde_saphyr::to_fmt_writer_with_options(&mut out, &document, options)
            .map_err(|e| RenderError::Yaml(e.to_string()))?;
        Ok(out)
    }
}

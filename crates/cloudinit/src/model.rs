//! A cloud-config as plain values, before Jinja escaping and YAML.

/// The cloud-config of one machine. [`CloudConfig::to_document`] writes it as user-data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CloudConfig {
    /// Files cloud-init writes before running any command.
    pub write_files: Vec<WriteFile>,
    /// The commands of cloud-init's `runcmd`, in order.
    pub runcmd: Vec<RunCmd>,
    /// The commands of cloud-init's `bootcmd` (the user's `bootCommands`; run on every boot).
    /// The key is left out of the document when empty.
    pub bootcmd: Vec<String>,
}

/// One entry of `write_files`. Its content is written verbatim — the renderer escapes it so
/// that cloud-init's Jinja rendering leaves it unchanged, users' files included — unless it is
/// a [`WriteFile::template`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteFile {
    /// Absolute path on the node.
    pub path: String,
    /// Octal permissions, e.g. `0700`; always written as a quoted string.
    pub permissions: String,
    /// `user:group`.
    pub owner: String,
    /// Content, verbatim.
    pub content: String,
    /// The content is a Jinja template that cloud-init renders (users' `extraKubeletArgs`,
    /// which may use instance data such as `{{ ds.meta_data.local_ipv4 }}`, as they could
    /// with Canonical's provider and with CABPK's kubelet arguments): written raw, each line
    /// guarded like a user's command ([`crate::jinja::guard_trailing_tag`]).
    pub template: bool,
}

/// One entry of `runcmd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunCmd {
    /// A command we generate, as an argument vector: cloud-init single-quotes each element,
    /// so every value reaches the script as exactly one argument. Escaped for Jinja.
    Argv(Vec<String>),
    /// A user's command line (`preRunCommands`/`postRunCommands`), run by `/bin/sh` as it
    /// is. Not escaped: cloud-init's Jinja rendering applies to it.
    Shell(String),
}

impl RunCmd {
    /// The argument vector of a generated entry.
    pub fn argv(&self) -> Option<&[String]> {
        match self {
            RunCmd::Argv(argv) => Some(argv),
            RunCmd::Shell(_) => None,
        }
    }
}

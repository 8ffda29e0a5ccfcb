//! Keeping generated text intact through cloud-init's Jinja rendering.
//!
//! The document starts with `## template: jinja`, so cloud-init renders all of it as a Jinja
//! template before parsing the YAML (users' commands may use instance data, e.g.
//! `{{ ds.meta_data.local_hostname }}`). Jinja reacts only to its three opening delimiters
//! `{{`, `{%` and `{#` (cloud-init enables no line statements), so [`escape`] replaces each
//! of them, scanning left to right, with a Jinja expression that prints it:
//!
//! | text | escaped        |
//! |------|----------------|
//! | `{{` | `{{ '{{' }}`   |
//! | `{%` | `{{ '{%' }}`   |
//! | `{#` | `{{ '{#' }}`   |
//!
//! Why expressions and not `{% raw %}…{% endraw %}`: cloud-init renders with
//! `trim_blocks=True`, which deletes the newline after every block tag (so a raw block that
//! ends a line would join two YAML lines), and a value containing `{% endraw %}` would need
//! splitting anyway. An expression tag is never trimmed, needs no nesting rules, and leaves
//! text without delimiters — almost everything we generate — byte for byte unchanged.
//!
//! The escape forms contain only `{`, `}`, `'`, `%`, `#` and spaces, which YAML's plain,
//! double-quoted and literal block styles all keep verbatim; the YAML writer never uses the
//! single-quoted style (which would double the `'`).

use std::borrow::Cow;

const FORMS: [(&str, &str); 3] = [("{{", "{{ '{{' }}"), ("{%", "{{ '{%' }}"), ("{#", "{{ '{#' }}")];

/// Escapes `text` so that Jinja renders it back to itself.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !has_delimiter(text) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    while let Some(pos) = find_delimiter(rest) {
        out.push_str(&rest[..pos]);
        let delimiter = &rest[pos..pos + 2];
        if let Some((_, escaped)) = FORMS.iter().find(|(d, _)| *d == delimiter) {
            out.push_str(escaped);
        }
        rest = &rest[pos + 2..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Undoes [`escape`]: replaces exactly the three escape forms by the delimiters they print,
/// left to right, and leaves everything else alone. On a whole document this is what
/// cloud-init's Jinja rendering produces when the users' commands and kubelet arguments use no Jinja
/// (the machine simulator and [`crate::check`] use it).
pub fn unescape(text: &str) -> Cow<'_, str> {
    if !text.contains("{{ '") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("{{ '") {
        let tail = &rest[pos..];
        match FORMS.iter().find(|(_, escaped)| tail.starts_with(escaped)) {
            Some((delimiter, escaped)) => {
                out.push_str(&rest[..pos]);
                out.push_str(delimiter);
                rest = &rest[pos + escaped.len()..];
            }
            None => {
                // Not one of ours: keep `{{ '` and go on after it.
                out.push_str(&rest[..pos + 4]);
                rest = &rest[pos + 4..];
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Keeps a user's Jinja template from eating the line break that ends its YAML entry.
///
/// cloud-init renders with `trim_blocks=True`: the newline right after a block tag (`%}`)
/// or a comment (`#}`) disappears. When a user's command ends with one, that newline is the
/// one that ends the YAML entry, and the next entry would be glued to it. This appends an
/// empty expression, `{{ '' }}`, after such a final tag: it renders to nothing, and the
/// newline now follows an expression, which Jinja never trims. Line breaks inside the
/// command keep Jinja's usual behaviour.
pub fn guard_trailing_tag(text: &str) -> Cow<'_, str> {
    let body = text.trim_end_matches('\n');
    if body.ends_with("%}") || body.ends_with("#}") {
        let mut out = String::with_capacity(text.len() + GUARD.len());
        out.push_str(body);
        out.push_str(GUARD);
        out.push_str(&text[body.len()..]);
        Cow::Owned(out)
    } else {
        Cow::Borrowed(text)
    }
}

const GUARD: &str = "{{ '' }}";

/// Whether `text` contains a Jinja opening delimiter.
pub fn has_delimiter(text: &str) -> bool {
    find_delimiter(text).is_some()
}

/// Byte offset of the first `{{`, `{%` or `{#` in `text`.
fn find_delimiter(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    bytes
        .windows(2)
        .position(|w| w[0] == b'{' && matches!(w[1], b'{' | b'%' | b'#'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_plain_text_alone() {
        for s in ["", "abc", "${x} {x} }} %} #}", "{", "{ {", "a{b%c#"] {
            assert!(matches!(escape(s), Cow::Borrowed(_)), "{s:?}");
            assert_eq!(escape(s), s);
        }
    }

    #[test]
    fn escapes_each_delimiter() {
        assert_eq!(escape("{{ x }}"), "{{ '{{' }} x }}");
        assert_eq!(escape("{% endraw %}"), "{{ '{%' }} endraw %}");
        assert_eq!(escape("{# c #}"), "{{ '{#' }} c #}");
        assert_eq!(escape("{{{"), "{{ '{{' }}{");
        assert_eq!(escape("{{{%"), "{{ '{{' }}{{ '{%' }}");
        assert_eq!(escape("{{#"), "{{ '{{' }}#");
        assert_eq!(escape("é{#ü"), "é{{ '{#' }}ü");
    }

    #[test]
    fn guards_only_a_final_tag() {
        assert_eq!(
            guard_trailing_tag("echo {% if x %}y{% endif %}"),
            "echo {% if x %}y{% endif %}{{ '' }}"
        );
        assert_eq!(guard_trailing_tag("a {# c #}\n\n"), "a {# c #}{{ '' }}\n\n");
        assert_eq!(
            guard_trailing_tag("{% if x %}\ny\n{% endif %} "),
            "{% if x %}\ny\n{% endif %} "
        );
        assert!(matches!(guard_trailing_tag("echo {{ x }}"), Cow::Borrowed(_)));
    }

    #[test]
    fn unescape_inverts_escape() {
        for s in [
            "",
            "{{ '{{' }}",
            "{{{{{",
            "{%{#{{",
            "{{ 'x' }}",
            "a {{ '{{' }} b",
            "{% raw %}{{ x }}{% endraw %}",
            "{{ '",
            "ü{{ '{%' }}",
        ] {
            assert_eq!(unescape(&escape(s)), s, "{s:?}");
        }
    }

    #[test]
    fn escaped_text_has_no_bare_delimiter() {
        // Every delimiter in an escaped text is the start of one of the escape forms.
        for s in ["{{{%{#x{{", "{%%}{##}{{}}", "{{ '{{' }}"] {
            let e = escape(s);
            let mut rest: &str = &e;
            while let Some(pos) = find_delimiter(rest) {
                let tail = &rest[pos..];
                let form = FORMS.iter().find(|(_, esc)| tail.starts_with(esc));
                let Some((_, esc)) = form else {
                    panic!("bare delimiter in {e:?}");
                };
                rest = &tail[esc.len()..];
            }
        }
    }
}

//! Forms: reading a posted `application/x-www-form-urlencoded` body ([`Form`]) and the
//! markup every form shares — the session's form token, a labelled field with its message
//! beside it, a select of labelled values.

use super::Visit;
use super::labels::Label;
use super::pages::esc;

/// Most fields a form may post; more is not a form of ours.
const MAX_FIELDS: usize = 64;

/// A posted form's fields, URL-decoded, in order. A malformed pair is dropped.
pub(super) struct Form {
    fields: Vec<(String, String)>,
}

impl Form {
    pub(super) fn parse(body: &[u8]) -> Form {
        let fields = body
            .split(|b| *b == b'&')
            .filter(|pair| !pair.is_empty())
            .take(MAX_FIELDS)
            .filter_map(|pair| {
                let mut kv = pair.splitn(2, |b| *b == b'=');
                let key = url_decode(kv.next()?)?;
                let value = url_decode(kv.next().unwrap_or_default())?;
                Some((key, value))
            })
            .collect();
        Form { fields }
    }

    /// A form holding `fields` (to fill a form from a record).
    pub(super) fn from_fields(fields: Vec<(String, String)>) -> Form {
        Form { fields }
    }

    /// Every field, in order.
    pub(super) fn fields(self) -> Vec<(String, String)> {
        self.fields
    }

    /// The first value of `name`, trimmed; `""` when absent.
    pub(super) fn get(&self, name: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.trim())
    }

    /// The value of `name`, or `None` when it is absent or blank.
    pub(super) fn optional(&self, name: &str) -> Option<String> {
        Some(self.get(name))
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    }

    /// Every non-blank value of `name` (checkboxes).
    pub(super) fn all(&self, name: &str) -> Vec<String> {
        self.fields
            .iter()
            .filter(|(k, v)| k == name && !v.trim().is_empty())
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }
}

/// Decodes `+` and `%XX`; `None` if the result is not UTF-8 or an escape is malformed.
fn url_decode(raw: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(raw.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The hidden field every form of a signed-in page carries.
pub(super) fn token_field(visit: &Visit) -> String {
    format!(
        r#"<input type="hidden" name="form_token" value="{}">"#,
        esc(&visit.form_token)
    )
}

/// A labelled field: `input` is the control's markup (its `id` is `name`), `message` an
/// error shown beside it.
pub(super) fn field(label: Label, name: &str, input: &str, message: Option<&str>) -> String {
    let message = message
        .map(|m| {
            format!(
                r#"<span class="field-error" role="alert">{}</span>"#,
                esc(m)
            )
        })
        .unwrap_or_default();
    format!(
        r#"<div class="field{}"><label for="{name}">{label}</label>{input}{message}</div>"#,
        if message.is_empty() { "" } else { " invalid" },
    )
}

/// A text input `name` holding `value`; `extra` adds attributes (`required`, `type="date"`).
pub(super) fn input(name: &str, value: &str, extra: &str) -> String {
    format!(
        r#"<input id="{name}" name="{name}" value="{}" {extra}>"#,
        esc(value)
    )
}

/// A select of `values`, each shown through `show`, with `chosen` selected.
pub(super) fn select(
    name: &str,
    values: &[&str],
    chosen: &str,
    show: impl Fn(&str) -> String,
) -> String {
    let options: String = values
        .iter()
        .map(|v| {
            format!(
                r#"<option value="{}"{}>{}</option>"#,
                esc(v),
                if *v == chosen { " selected" } else { "" },
                strip_tags(&show(v)),
            )
        })
        .collect();
    format!(r#"<select id="{name}" name="{name}">{options}</select>"#)
}

/// A labelled value's text without its markup, for `<option>` (which holds text only).
fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_are_url_decoded() {
        let form = Form::parse(b"other=1&token=ab%2Bc+d%3D&x&c=a&c=b&c=");
        assert_eq!(form.get("token"), "ab+c d=");
        assert_eq!(form.get("other"), "1");
        assert_eq!(form.get("x"), "");
        assert_eq!(form.get("missing"), "");
        assert_eq!(form.optional("x"), None);
        assert_eq!(form.all("c"), vec!["a", "b"]);
        assert_eq!(Form::parse(b"token=%zz").get("token"), "");
        assert_eq!(Form::parse(b"token=%4").get("token"), "");
    }

    #[test]
    fn a_form_reads_at_most_its_share_of_fields() {
        let body = "a=1&".repeat(10_000);
        assert_eq!(Form::parse(body.as_bytes()).all("a").len(), MAX_FIELDS);
    }
}

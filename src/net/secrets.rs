//! Secrets (the Consul ACL token, the etcd password and token, passwords in URLs) and the
//! redaction applied where text leaves the process: error texts, the log, the audit log,
//! the screen, `snapshot --json`, panic messages.
//!
//! - [`Secret`] holds one. Its `Debug` shows `<redacted>`, and creating one remembers its
//!   value (process-wide, at most [`MAX_KNOWN`]), so [`scrub_known`] can cut it out of
//!   any text later, whoever wrote that text (a server echoing the token in an error
//!   page, a formatting slip, a panic message).
//! - [`scrub`] is the pure part: it removes the user-info of every URL in a text
//!   (`http://user:pass@host` → `http://host`) and replaces each given secret with
//!   [`REDACTED`]. Values shorter than [`MIN_SECRET_CHARS`] are not searched for (they
//!   would blank out ordinary words).
//! - Sinks: [`ScrubbingWriter`] for the log, [`install_panic_hook`] for panics.

use std::borrow::Cow;
use std::fmt;
use std::io::Write;
use std::sync::RwLock;

/// What a secret is replaced with.
pub const REDACTED: &str = "<redacted>";
/// Secrets shorter than this are not searched for in texts.
pub const MIN_SECRET_CHARS: usize = 4;
/// How many secret values are remembered (the oldest go first: etcd tokens are renewed).
pub const MAX_KNOWN: usize = 64;

static KNOWN: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// A secret text (token, password). `Debug` never shows it; creating one remembers it
/// for [`scrub_known`].
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps (and remembers) a secret.
    #[must_use]
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        remember(&value);
        Self(value)
    }

    /// The secret itself, for the one place that sends it (a header or a request body).
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// For flags (`--etcd-user user:password`): the value never shows in `Debug`.
impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(s))
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::new)
    }
}

/// Remembers `value` as a secret for [`scrub_known`] (no-op when too short or known).
pub fn remember(value: &str) {
    if value.chars().count() < MIN_SECRET_CHARS {
        return;
    }
    let Ok(mut known) = KNOWN.write() else {
        return;
    };
    if known.iter().any(|k| k == value) {
        return;
    }
    if known.len() >= MAX_KNOWN {
        known.remove(0);
    }
    known.push(value.to_owned());
}

/// Remembers the password of a URL with user-info (`http://user:pass@host`), as written
/// and percent-decoded, for [`scrub_known`]; a URL without one is left alone.
pub fn remember_url_secrets(url: &str) {
    let Ok(parsed) = reqwest::Url::parse(url.trim()) else {
        return;
    };
    if let Some(password) = parsed.password() {
        remember(password);
        if let Ok(decoded) = percent_decode(password) {
            remember(&decoded);
        }
    }
}

/// `%xx` escapes decoded (UTF-8).
fn percent_decode(text: &str) -> Result<String, std::string::FromUtf8Error> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
}

/// `text` without URL user-info and without any of `secrets` (each replaced by
/// [`REDACTED`]).
#[must_use]
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = strip_userinfo(text).into_owned();
    for secret in secrets {
        if secret.chars().count() >= MIN_SECRET_CHARS && out.contains(secret) {
            out = out.replace(secret, REDACTED);
        }
    }
    out
}

/// [`scrub`] with every secret created so far (see [`Secret::new`], [`remember`]).
#[must_use]
pub fn scrub_known(text: &str) -> String {
    let Ok(known) = KNOWN.read() else {
        return strip_userinfo(text).into_owned();
    };
    let secrets: Vec<&str> = known.iter().map(String::as_str).collect();
    scrub(text, &secrets)
}

/// Scrubs a text in place (see [`scrub_known`]); allocates only when something is found.
pub fn scrub_in_place(text: &mut String) {
    let clean = scrub_known(text);
    if clean != *text {
        *text = clean;
    }
}

/// `text` with the user-info of every `scheme://user:pass@host` removed (`scheme://host`).
#[must_use]
pub fn strip_userinfo(text: &str) -> Cow<'_, str> {
    if !text.contains("://") || !text.contains('@') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        // The authority ends at the path, query, fragment, or anything a URL in prose
        // would end with.
        let end = tail
            .find(|c: char| {
                matches!(
                    c,
                    '/' | '?' | '#' | '"' | '\'' | '<' | '>' | '(' | ')' | '`'
                ) || c.is_whitespace()
            })
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        rest = match authority.rfind('@') {
            Some(at) => &tail[at + 1..],
            None => tail,
        };
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// A URL for messages and the screen: its user-info removed.
#[must_use]
pub fn redact_url(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    if !shown.username().is_empty() || shown.password().is_some() {
        // Cannot fail for http(s) URLs.
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
    }
    shown.to_string()
}

/// An `io::Write` that scrubs what passes through it ([`scrub_known`]): the log's writer.
/// The fmt layer of `tracing-subscriber` hands it one whole event per write.
#[derive(Debug)]
pub struct ScrubbingWriter<W>(pub W);

impl<W: Write> Write for ScrubbingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(scrub_known(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// The text of a panic, scrubbed: `thread 'name' panicked at file:line:col:\nmessage`,
/// plus a backtrace when `RUST_BACKTRACE` asks for one.
#[must_use]
pub fn panic_text(info: &std::panic::PanicHookInfo<'_>) -> String {
    let message = info
        .payload_as_str()
        .unwrap_or("Box<dyn Any> (a panic without a message)");
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("<unnamed>");
    let location = info
        .location()
        .map(|l| format!(" at {}:{}:{}", l.file(), l.line(), l.column()))
        .unwrap_or_default();
    let backtrace = std::backtrace::Backtrace::capture();
    let backtrace = match backtrace.status() {
        std::backtrace::BacktraceStatus::Captured => format!("\n{backtrace}"),
        _ => String::new(),
    };
    scrub_known(&format!(
        "thread '{name}' panicked{location}:\n{message}{backtrace}"
    ))
}

/// Replaces the panic hook with one that writes [`panic_text`] (scrubbed) to stderr.
pub fn install_panic_hook() {
    install_panic_hook_with(|text| eprintln!("{text}"));
}

/// Replaces the panic hook with one that hands [`panic_text`] to `sink`.
pub fn install_panic_hook_with(sink: impl Fn(&str) + Send + Sync + 'static) {
    std::panic::set_hook(Box::new(move |info| sink(&panic_text(info))));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_goes_from_every_url() {
        assert_eq!(
            strip_userinfo("GET http://u:p@h:1/x failed; see https://a@b/c (user@mail)"),
            "GET http://h:1/x failed; see https://b/c (user@mail)"
        );
        assert_eq!(strip_userinfo("http://h:1/a@b"), "http://h:1/a@b");
        assert_eq!(strip_userinfo("x http://u:p@h"), "x http://h");
        assert!(matches!(strip_userinfo("plain text"), Cow::Borrowed(_)));
    }

    #[test]
    fn secrets_are_replaced_short_ones_ignored() {
        assert_eq!(
            scrub("token abcd-1234 in abcd-1234!", &["abcd-1234", "ab"]),
            "token <redacted> in <redacted>!"
        );
        let s = Secret::new("remembered-secret-value");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(scrub_known("x remembered-secret-value y"), "x <redacted> y");
        let mut w = ScrubbingWriter(Vec::new());
        w.write_all(b"log remembered-secret-value\n").unwrap();
        assert_eq!(w.0, b"log <redacted>\n");
    }
}

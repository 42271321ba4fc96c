//! HTTP client helpers shared by the registry clients and the sidecar scrapers: a body
//! read with a size limit (the one bounded reader every HTTP read goes through), the
//! limits themselves ([`limits`]), short operator-facing texts for transport errors, and
//! the redaction of secrets ([`secrets`]).

pub mod limits;
pub mod secrets;

pub use secrets::{Secret, redact_url, scrub, scrub_known, strip_userinfo};

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// Larger than the limit; reading stopped there.
    TooLarge,
    /// The connection failed while reading.
    Transport(reqwest::Error),
}

/// Reads `resp`'s body in chunks, at most `limit` bytes (memory stays within the limit
/// plus one chunk). A longer body is [`BodyError::TooLarge`] — at once when its declared
/// `Content-Length` is over the limit —, or, with `truncate`, cut at the limit (for error
/// texts that are shortened anyway). Never `.bytes()` or `.text()` a response: they read
/// without a limit. The deadline is the caller's (whole exchange, body included).
pub async fn read_body(
    resp: &mut reqwest::Response,
    limit: usize,
    truncate: bool,
) -> Result<Vec<u8>, BodyError> {
    if !truncate && resp.content_length().is_some_and(|len| len > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Transport)? {
        if buf.len() + chunk.len() > limit {
            if !truncate {
                return Err(BodyError::TooLarge);
            }
            let room = limit - buf.len();
            buf.extend_from_slice(&chunk[..room]);
            break;
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// A short text for a failed request, without the URL (callers add it, last):
/// `connection refused`, `cannot connect: …`, `connection broken while reading the answer: …`.
/// Timeouts are described by the caller, who knows the deadline.
#[must_use]
pub fn describe_transport(err: &reqwest::Error) -> String {
    if err.is_connect() {
        if has_io_kind(err, std::io::ErrorKind::ConnectionRefused) {
            "connection refused".to_owned()
        } else {
            format!("cannot connect: {}", innermost_message(err))
        }
    } else if err.is_body() || err.is_decode() {
        format!(
            "connection broken while reading the answer: {}",
            innermost_message(err)
        )
    } else {
        format!("request failed: {}", innermost_message(err))
    }
}

/// Whether a failed request may have reached the server, by the error's kind (never its
/// text): anything but a failure to connect (refused, DNS, TLS handshake, connect timeout)
/// or to build the request. A write that failed so has an unknown outcome: it may have
/// been applied and only the answer was lost (reset after sending, timeout, broken body).
#[must_use]
pub fn may_have_been_sent(err: &reqwest::Error) -> bool {
    !(err.is_connect() || err.is_builder() || err.is_redirect())
}

/// Whether an `io::Error` of `kind` is somewhere in the error's source chain.
fn has_io_kind(err: &(dyn std::error::Error + 'static), kind: std::io::ErrorKind) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == kind)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// The text of the deepest cause of an error (reqwest's own text carries the URL, which callers add
/// themselves, last), without URL user-info should that cause name a URL.
pub fn innermost_message(err: &(dyn std::error::Error + 'static)) -> String {
    let mut last: &(dyn std::error::Error + 'static) = err;
    while let Some(next) = last.source() {
        last = next;
    }
    strip_userinfo(&last.to_string()).into_owned()
}

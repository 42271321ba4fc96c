//! One HTTP GET with a timeout and a maximum body size, for sidecar scrapes.

use std::time::Duration;

/// Why a fetch failed; the text is shown to the operator as is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FetchError {
    /// No answer in time.
    #[error("timed out after {secs:.1} s ({url})")]
    Timeout {
        /// The deadline.
        secs: f64,
        /// The URL.
        url: String,
    },
    /// Connection or protocol failure.
    #[error("{message} ({url})")]
    Transport {
        /// What failed.
        message: String,
        /// The URL.
        url: String,
    },
    /// Non-2xx answer.
    #[error("HTTP {status}: {body} ({url})")]
    Status {
        /// Status code.
        status: u16,
        /// Start of the body.
        body: String,
        /// The URL.
        url: String,
    },
    /// The body was larger than allowed; reading stopped.
    #[error("response larger than {limit} bytes, cut off ({url})")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
        /// The URL.
        url: String,
    },
    /// The body is not UTF-8 text.
    #[error("response is not UTF-8 text ({url})")]
    NotText {
        /// The URL.
        url: String,
    },
}

/// The most of an error body kept for a message.
const ERROR_BODY_CHARS: usize = 300;

/// GETs `url` as text within `timeout` (whole exchange, body included), reading at most
/// `limit` bytes.
pub async fn fetch_text(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
    limit: usize,
) -> Result<String, FetchError> {
    match tokio::time::timeout(timeout, fetch_inner(client, url, limit)).await {
        Ok(result) => result,
        Err(_) => Err(FetchError::Timeout {
            secs: timeout.as_secs_f64(),
            url: url.to_owned(),
        }),
    }
}

async fn fetch_inner(
    client: &reqwest::Client,
    url: &str,
    limit: usize,
) -> Result<String, FetchError> {
    let transport = |e: &reqwest::Error| FetchError::Transport {
        message: describe(e),
        url: url.to_owned(),
    };
    let mut resp = client.get(url).send().await.map_err(|e| transport(&e))?;
    let status = resp.status();
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(FetchError::TooLarge {
            limit,
            url: url.to_owned(),
        });
    }
    let mut body: Vec<u8> = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| transport(&e))? {
        if body.len() + chunk.len() > limit {
            return Err(FetchError::TooLarge {
                limit,
                url: url.to_owned(),
            });
        }
        body.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        let text: String = text.trim().chars().take(ERROR_BODY_CHARS).collect();
        return Err(FetchError::Status {
            status: status.as_u16(),
            body: text,
            url: url.to_owned(),
        });
    }
    String::from_utf8(body).map_err(|_| FetchError::NotText {
        url: url.to_owned(),
    })
}

/// A short description of a reqwest error without the URL (added by the caller).
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_connect() {
        "connection failed".to_owned()
    } else if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_body() || e.is_decode() {
        "broken response body".to_owned()
    } else {
        "request failed".to_owned()
    };
    // The innermost cause says what really happened ("Connection refused (os error 111)").
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut innermost = None;
    while let Some(s) = source {
        innermost = Some(s.to_string());
        source = s.source();
    }
    if let Some(cause) = innermost {
        text.push_str(": ");
        text.push_str(&cause);
    }
    text
}

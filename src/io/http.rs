//! One HTTP GET with a timeout and a maximum body size, for sidecar scrapes. Error texts
//! name the URL without its user-info (a `metrics_url` may carry `user:pass@`).

use std::time::Duration;

use crate::net::limits::{format_bytes, format_duration};
use crate::net::{BodyError, describe_transport, read_body, scrub_known, strip_userinfo};

/// Why a fetch failed; the text is shown to the operator as is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FetchError {
    /// No complete answer in time (no head, or the body did not end).
    #[error("no complete answer within {} ({url})", format_duration(*deadline))]
    Timeout {
        /// The deadline.
        deadline: Duration,
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
    #[error("answer larger than {}, cut off ({url})", format_bytes(*limit))]
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
    fetch_text_as(client, url, url, timeout, limit).await
}

/// How a URL is named in errors: without user-info.
fn shown(url: &str) -> String {
    strip_userinfo(url).into_owned()
}

/// [`fetch_text`] of `request_url`, with errors naming `url` (the address the operator
/// knows, e.g. the registered stats URL without the query the scraper adds).
pub(crate) async fn fetch_text_as(
    client: &reqwest::Client,
    request_url: &str,
    url: &str,
    timeout: Duration,
    limit: usize,
) -> Result<String, FetchError> {
    match tokio::time::timeout(
        timeout,
        fetch_inner(client, request_url, url, timeout, limit),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(FetchError::Timeout {
            deadline: timeout,
            url: shown(url),
        }),
    }
}

async fn fetch_inner(
    client: &reqwest::Client,
    request_url: &str,
    url: &str,
    timeout: Duration,
    limit: usize,
) -> Result<String, FetchError> {
    // The client's own timeout (if it has one as long as ours) may fire first: the same
    // deadline, the same text.
    let transport = |e: &reqwest::Error| {
        if e.is_timeout() && !e.is_connect() {
            FetchError::Timeout {
                deadline: timeout,
                url: shown(url),
            }
        } else {
            FetchError::Transport {
                message: describe_transport(e),
                url: shown(url),
            }
        }
    };
    let mut resp = client
        .get(request_url)
        .send()
        .await
        .map_err(|e| transport(&e))?;
    let status = resp.status();
    let body = match read_body(&mut resp, limit, !status.is_success()).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            return Err(FetchError::TooLarge {
                limit,
                url: shown(url),
            });
        }
        Err(BodyError::Transport(e)) => return Err(transport(&e)),
    };
    if !status.is_success() {
        let text = scrub_known(String::from_utf8_lossy(&body).trim());
        let text: String = text.chars().take(ERROR_BODY_CHARS).collect();
        return Err(FetchError::Status {
            status: status.as_u16(),
            body: text,
            url: shown(url),
        });
    }
    String::from_utf8(body).map_err(|_| FetchError::NotText { url: shown(url) })
}

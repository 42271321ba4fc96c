//! One HTTP GET with a timeout and a maximum body size, for sidecar scrapes.

use std::time::Duration;

use crate::net::{BodyError, describe_transport, read_body};

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
    fetch_text_as(client, url, url, timeout, limit).await
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
    match tokio::time::timeout(timeout, fetch_inner(client, request_url, url, limit)).await {
        Ok(result) => result,
        Err(_) => Err(FetchError::Timeout {
            secs: timeout.as_secs_f64(),
            url: url.to_owned(),
        }),
    }
}

async fn fetch_inner(
    client: &reqwest::Client,
    request_url: &str,
    url: &str,
    limit: usize,
) -> Result<String, FetchError> {
    let transport = |e: &reqwest::Error| FetchError::Transport {
        message: describe_transport(e),
        url: url.to_owned(),
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
                url: url.to_owned(),
            });
        }
        Err(BodyError::Transport(e)) => return Err(transport(&e)),
    };
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

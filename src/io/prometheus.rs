//! Queries a Prometheus server's HTTP API (`GET /api/v1/query`): the four queries of one
//! refresh run concurrently and fold into [`LaneSamples`] (`metrics::prometheus`).

use std::time::Duration;

use crate::metrics::prometheus::{
    LaneSamples, PrometheusSource, QueryAnswer, QueryKind, ResponseError, assemble, parse_response,
    promql,
};
use crate::net::limits::{self, format_bytes, format_duration};
use crate::net::{BodyError, describe_transport, read_body};

/// Largest answer read (a big mesh's bucket rates are a few MB).
const MAX_ANSWER_BYTES: usize = limits::PROMETHEUS_MAX_BODY_BYTES;

/// Why a query failed; the text is shown to the operator as is (URL last, no credentials:
/// the URL never holds any, `config::parse_metrics` refuses them).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PrometheusError {
    /// The server answered, but not with usable data (an API error, a proxy page…).
    #[error("Prometheus {query} query: {source} ({url})")]
    Response {
        /// Which query.
        query: &'static str,
        /// What the answer said.
        source: ResponseError,
        /// The query endpoint.
        url: String,
    },
    /// Connection or protocol failure.
    #[error("Prometheus {query} query: {message}{hint} ({url})")]
    Transport {
        /// Which query.
        query: &'static str,
        /// What failed.
        message: String,
        /// A hint, or empty.
        hint: &'static str,
        /// The query endpoint.
        url: String,
    },
    /// No complete answer in time.
    #[error("Prometheus {query} query: no complete answer within {} ({url})", format_duration(*deadline))]
    Timeout {
        /// Which query.
        query: &'static str,
        /// The deadline.
        deadline: Duration,
        /// The query endpoint.
        url: String,
    },
    /// The answer was larger than allowed; reading stopped.
    #[error("Prometheus {query} query: answer larger than {}, cut off ({url})", format_bytes(*limit))]
    TooLarge {
        /// Which query.
        query: &'static str,
        /// The limit in bytes.
        limit: usize,
        /// The query endpoint.
        url: String,
    },
    /// The base URL cannot be combined with the query.
    #[error("Prometheus address is not a URL: {detail} ({url})")]
    BadUrl {
        /// The parser's text.
        detail: String,
        /// The query endpoint.
        url: String,
    },
}

/// An HTTP client for Prometheus queries (the whole exchange's deadline is
/// [`query_timeout`], applied by [`run_query`]).
#[must_use]
pub fn client(connect_timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .no_proxy()
        .build()
        .unwrap_or_default()
}

/// The deadline of one refresh's queries: the refresh interval, within 2–30 s.
#[must_use]
pub fn query_timeout(source: &PrometheusSource) -> Duration {
    source.interval.clamp(
        limits::PROMETHEUS_MIN_TIMEOUT,
        limits::PROMETHEUS_MAX_TIMEOUT,
    )
}

/// Runs one instant query (`query` names it in errors), evaluated at `time` (Unix seconds,
/// the server's clock) or, with `None`, when it arrives.
pub async fn run_query(
    http: &reqwest::Client,
    source: &PrometheusSource,
    query: &'static str,
    promql: &str,
    time: Option<f64>,
) -> Result<QueryAnswer, PrometheusError> {
    let endpoint = source.query_url();
    let mut url = reqwest::Url::parse(&endpoint).map_err(|e| PrometheusError::BadUrl {
        detail: e.to_string(),
        url: endpoint.clone(),
    })?;
    url.query_pairs_mut().append_pair("query", promql);
    if let Some(t) = time {
        url.query_pairs_mut()
            .append_pair("time", &format!("{t:.3}"));
    }
    let timeout = query_timeout(source);
    let exchange = async {
        let transport = |e: &reqwest::Error| {
            let message = describe_transport(e);
            let hint = if message == "connection refused" {
                " — is Prometheus running at that address?"
            } else {
                ""
            };
            PrometheusError::Transport {
                query,
                message,
                hint,
                url: endpoint.clone(),
            }
        };
        let mut resp = http.get(url).send().await.map_err(|e| transport(&e))?;
        let status = resp.status();
        let body = match read_body(&mut resp, MAX_ANSWER_BYTES, !status.is_success()).await {
            Ok(body) => body,
            Err(BodyError::TooLarge) => {
                return Err(PrometheusError::TooLarge {
                    query,
                    limit: MAX_ANSWER_BYTES,
                    url: endpoint.clone(),
                });
            }
            Err(BodyError::Transport(e)) => return Err(transport(&e)),
        };
        parse_response(status.as_u16(), &body).map_err(|source| PrometheusError::Response {
            query,
            source,
            url: endpoint.clone(),
        })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(PrometheusError::Timeout {
            query,
            deadline: timeout,
            url: endpoint.clone(),
        }),
    }
}

/// One refresh: the four queries of [`QueryKind::ALL`], folded into lanes. The rates query
/// goes first; the other three run concurrently at its evaluation time, so all four see
/// the same window. The error is that of the first failed query in that order (the same
/// text every refresh while a server is down).
pub async fn query_lanes(
    http: &reqwest::Client,
    source: &PrometheusSource,
) -> Result<LaneSamples, PrometheusError> {
    let text = |kind: QueryKind| promql(kind, source.window);
    let [rates, buckets, quantiles, gauges] = QueryKind::ALL.map(text);
    let rates = run_query(http, source, QueryKind::Rates.name(), &rates, None).await?;
    let at = rates.eval_time;
    let (buckets, quantiles, gauges) = tokio::join!(
        run_query(http, source, QueryKind::Buckets.name(), &buckets, at),
        run_query(http, source, QueryKind::Quantiles.name(), &quantiles, at),
        run_query(http, source, QueryKind::Gauges.name(), &gauges, at),
    );
    let (buckets, quantiles, gauges) = (buckets?, quantiles?, gauges?);
    Ok(assemble(
        &rates,
        &buckets,
        &quantiles,
        &gauges,
        source.window.as_secs_f64(),
    ))
}

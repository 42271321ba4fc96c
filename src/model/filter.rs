//! Filter predicates for the `/` filter box.
//!
//! Terms are separated by spaces; a service matches when every term holds (AND):
//! - a bare word: a substring of the service name, case-insensitive (`ident`);
//! - `err`, `p50`, `p95`, `p99`, `rps` with `>`, `>=`, `<`, `<=` and a number:
//!   `err>1%` (5xx share in percent, `%` optional), `p99>250ms` / `p99>1s` (latency, `ms`
//!   or `s`; a bare number is ms), `rps<1`. Such a term holds when **any** lane into the
//!   service (any caller, any version) with fresh data satisfies it; a lane without data
//!   never does (and a window without requests has no error rate nor latency);
//! - `version:v2` — the service has that version;
//! - `breaker:open` (also `saturated`, `ejecting`, `closed`) — any lane into the service
//!   with fresh data is in that state;
//! - `health:critical` (also `warning`, `passing`) — any instance of the service has that
//!   health.
//!
//! `key:a|b` accepts any of the listed values. Each term is judged on its own: `err>1%
//! p99>250ms` matches a service with one lane erring and another slow.

use std::fmt;
use std::time::Instant;

use super::Model;
use super::types::{BreakerState, Health};
use crate::metrics::WindowStats;

/// A latency or rate the filter can compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// 5xx share, percent.
    ErrPct,
    /// Median latency, ms.
    P50Ms,
    /// 95th percentile latency, ms.
    P95Ms,
    /// 99th percentile latency, ms.
    P99Ms,
    /// Completed requests per second.
    Rps,
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
}

impl Cmp {
    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Self::Gt => a > b,
            Self::Ge => a >= b,
            Self::Lt => a < b,
            Self::Le => a <= b,
        }
    }
}

/// A breaker state without its numbers, for `breaker:` terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerKind {
    /// `closed`
    Closed,
    /// `saturated`
    Saturated,
    /// `ejecting n of m`, any n and m.
    Ejecting,
    /// `open`
    Open,
}

impl BreakerKind {
    /// The kind of a state.
    #[must_use]
    pub fn of(state: BreakerState) -> Self {
        match state {
            BreakerState::Closed => Self::Closed,
            BreakerState::Saturated => Self::Saturated,
            BreakerState::Ejecting { .. } => Self::Ejecting,
            BreakerState::Open => Self::Open,
        }
    }
}

/// One term of a filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Term {
    /// Service-name substring, lowercased.
    Name(String),
    /// A metric comparison; `value` in the metric's unit (percent, ms, rps).
    Metric {
        /// What is compared.
        metric: Metric,
        /// How.
        cmp: Cmp,
        /// With what.
        value: f64,
    },
    /// The service has one of these versions (lowercased).
    Version(Vec<String>),
    /// Some lane into the service is in one of these breaker states.
    Breaker(Vec<BreakerKind>),
    /// Some instance of the service has one of these health states.
    Health(Vec<Health>),
}

/// A parsed filter: all terms must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// The terms, in the order typed.
    pub terms: Vec<Term>,
}

/// Why a filter term could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{term}: {reason}")]
pub struct FilterError {
    /// The term as typed.
    pub term: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FilterError {
    fn new(term: &str, reason: impl fmt::Display) -> Self {
        Self {
            term: term.to_owned(),
            reason: reason.to_string(),
        }
    }
}

impl Filter {
    /// Parses the filter box text (see module docs). Empty text is the empty filter.
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        let terms = text
            .split_whitespace()
            .map(parse_term)
            .collect::<Result<_, _>>()?;
        Ok(Self { terms })
    }

    /// Whether the filter has no term (everything matches).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }
}

const OPERATORS: [(&str, Cmp); 4] = [
    (">=", Cmp::Ge),
    ("<=", Cmp::Le),
    (">", Cmp::Gt),
    ("<", Cmp::Lt),
];

fn parse_term(term: &str) -> Result<Term, FilterError> {
    let lower = term.to_lowercase();
    if let Some(at) = lower.find(['<', '>', '=']) {
        return parse_comparison(term, &lower, at);
    }
    if let Some((key, values)) = lower.split_once(':') {
        let values: Vec<&str> = values.split('|').collect();
        if values.iter().any(|v| v.is_empty()) {
            return Err(FilterError::new(term, format!("{key}: needs a value")));
        }
        return match key {
            "version" => Ok(Term::Version(
                values.into_iter().map(str::to_owned).collect(),
            )),
            "breaker" => values
                .into_iter()
                .map(|v| match v {
                    "closed" => Ok(BreakerKind::Closed),
                    "saturated" => Ok(BreakerKind::Saturated),
                    "ejecting" => Ok(BreakerKind::Ejecting),
                    "open" => Ok(BreakerKind::Open),
                    _ => Err(FilterError::new(
                        term,
                        format!("unknown breaker state '{v}' (closed, saturated, ejecting, open)"),
                    )),
                })
                .collect::<Result<_, _>>()
                .map(Term::Breaker),
            "health" => values
                .into_iter()
                .map(|v| match v {
                    "passing" => Ok(Health::Passing),
                    "warning" => Ok(Health::Warning),
                    "critical" => Ok(Health::Critical),
                    _ => Err(FilterError::new(
                        term,
                        format!("unknown health '{v}' (passing, warning, critical)"),
                    )),
                })
                .collect::<Result<_, _>>()
                .map(Term::Health),
            _ => Err(FilterError::new(
                term,
                format!("unknown key '{key}' (version, breaker, health)"),
            )),
        };
    }
    Ok(Term::Name(lower))
}

fn parse_comparison(term: &str, lower: &str, at: usize) -> Result<Term, FilterError> {
    let (name, rest) = lower.split_at(at);
    let Some((cmp, number)) = OPERATORS
        .iter()
        .find_map(|(op, cmp)| rest.strip_prefix(op).map(|n| (*cmp, n)))
    else {
        return Err(FilterError::new(term, "comparison must be >, >=, < or <="));
    };
    let metric = match name {
        "err" => Metric::ErrPct,
        "p50" => Metric::P50Ms,
        "p95" => Metric::P95Ms,
        "p99" => Metric::P99Ms,
        "rps" => Metric::Rps,
        "" => {
            return Err(FilterError::new(
                term,
                "missing metric before the comparison",
            ));
        }
        _ => {
            return Err(FilterError::new(
                term,
                format!("unknown metric '{name}' (err, p50, p95, p99, rps)"),
            ));
        }
    };
    let (digits, scale) = match metric {
        Metric::ErrPct => (number.strip_suffix('%').unwrap_or(number), 1.0),
        Metric::Rps => (number, 1.0),
        Metric::P50Ms | Metric::P95Ms | Metric::P99Ms => {
            if let Some(ms) = number.strip_suffix("ms") {
                (ms, 1.0)
            } else if let Some(s) = number.strip_suffix('s') {
                (s, 1000.0)
            } else {
                (number, 1.0)
            }
        }
    };
    if digits.is_empty() {
        return Err(FilterError::new(term, "missing number"));
    }
    let value: f64 = digits.parse().map_err(|_| {
        let unit = match metric {
            Metric::ErrPct => "a percentage such as 1% or 0.5%",
            Metric::Rps => "a rate such as 10",
            _ => "a latency such as 250ms or 1s",
        };
        FilterError::new(term, format!("'{number}' is not {unit}"))
    })?;
    if !value.is_finite() || value < 0.0 {
        return Err(FilterError::new(
            term,
            format!("'{number}' is not a finite, non-negative number"),
        ));
    }
    Ok(Term::Metric {
        metric,
        cmp,
        value: value * scale,
    })
}

impl Model {
    /// Whether `service` passes `filter` at `now` (see the module docs for each term).
    /// Lane data counts when the lane has stats no older than two scrape intervals.
    #[must_use]
    pub fn matches(&self, service: &str, filter: &Filter, now: Instant) -> bool {
        if filter.is_empty() {
            return true;
        }
        let fresh_within = self.slowest_sidecar_interval() * 2;
        let fresh: Vec<&WindowStats> = self
            .lanes_into(service)
            .filter_map(|l| {
                let stats = l.stats.as_ref()?;
                let age = now.saturating_duration_since(l.updated_at?);
                (age <= fresh_within).then_some(stats)
            })
            .collect();
        let name = service.to_lowercase();
        let entry = self.services.get(service);
        filter.terms.iter().all(|term| match term {
            Term::Name(part) => name.contains(part.as_str()),
            Term::Metric { metric, cmp, value } => fresh.iter().any(|s| {
                let got = match metric {
                    Metric::ErrPct => s.err5xx_ratio.map(|r| r * 100.0),
                    Metric::P50Ms => s.p50_ms,
                    Metric::P95Ms => s.p95_ms,
                    Metric::P99Ms => s.p99_ms,
                    Metric::Rps => Some(s.rps),
                };
                got.is_some_and(|g| cmp.holds(g, *value))
            }),
            Term::Version(wanted) => entry.is_some_and(|svc| {
                svc.versions()
                    .iter()
                    .any(|v| wanted.contains(&v.to_lowercase()))
            }),
            Term::Breaker(kinds) => fresh
                .iter()
                .any(|s| kinds.contains(&BreakerKind::of(s.breaker))),
            Term::Health(states) => {
                entry.is_some_and(|svc| svc.instances.iter().any(|i| states.contains(&i.health)))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::LaneWindow;
    use crate::model::LaneState;
    use crate::model::tests_support::{lane_key, stats_window, test_model};
    use crate::model::types::LaneKey;
    use std::time::Duration;

    fn metric(metric: Metric, cmp: Cmp, value: f64) -> Term {
        Term::Metric { metric, cmp, value }
    }

    #[test]
    fn parses_every_kind_of_term() {
        let f = Filter::parse(
            "  Ident err>1% err>=0.5 err<1% p99>250ms p99>1s p50<=20 p95>0.5s rps>10 rps<1 \
             version:v2 breaker:open|saturated breaker:ejecting health:critical|WARNING",
        )
        .unwrap();
        assert_eq!(
            f,
            Filter {
                terms: vec![
                    Term::Name("ident".into()),
                    metric(Metric::ErrPct, Cmp::Gt, 1.0),
                    metric(Metric::ErrPct, Cmp::Ge, 0.5),
                    metric(Metric::ErrPct, Cmp::Lt, 1.0),
                    metric(Metric::P99Ms, Cmp::Gt, 250.0),
                    metric(Metric::P99Ms, Cmp::Gt, 1000.0),
                    metric(Metric::P50Ms, Cmp::Le, 20.0),
                    metric(Metric::P95Ms, Cmp::Gt, 500.0),
                    metric(Metric::Rps, Cmp::Gt, 10.0),
                    metric(Metric::Rps, Cmp::Lt, 1.0),
                    Term::Version(vec!["v2".into()]),
                    Term::Breaker(vec![BreakerKind::Open, BreakerKind::Saturated]),
                    Term::Breaker(vec![BreakerKind::Ejecting]),
                    Term::Health(vec![Health::Critical, Health::Warning]),
                ]
            }
        );
        assert!(Filter::parse("   ").unwrap().is_empty());
        assert!(!f.is_empty());
    }

    #[test]
    fn bad_terms_say_which_and_why() {
        let cases = [
            (
                "ok err>abc",
                "err>abc",
                "'abc' is not a percentage such as 1% or 0.5%",
            ),
            (
                "p99>5h",
                "p99>5h",
                "'5h' is not a latency such as 250ms or 1s",
            ),
            ("rps>", "rps>", "missing number"),
            (
                "rps>-1",
                "rps>-1",
                "'-1' is not a finite, non-negative number",
            ),
            (
                "rps>inf",
                "rps>inf",
                "'inf' is not a finite, non-negative number",
            ),
            (
                "lag>3",
                "lag>3",
                "unknown metric 'lag' (err, p50, p95, p99, rps)",
            ),
            (">3", ">3", "missing metric before the comparison"),
            ("err=1%", "err=1%", "comparison must be >, >=, < or <="),
            ("err=>1%", "err=>1%", "comparison must be >, >=, < or <="),
            (
                "breaker:half-open",
                "breaker:half-open",
                "unknown breaker state 'half-open' (closed, saturated, ejecting, open)",
            ),
            (
                "health:sick",
                "health:sick",
                "unknown health 'sick' (passing, warning, critical)",
            ),
            ("version:", "version:", "version: needs a value"),
            ("breaker:open|", "breaker:open|", "breaker: needs a value"),
            (
                "colour:red",
                "colour:red",
                "unknown key 'colour' (version, breaker, health)",
            ),
        ];
        for (text, term, reason) in cases {
            assert_eq!(
                Filter::parse(text),
                Err(FilterError {
                    term: term.into(),
                    reason: reason.into()
                }),
                "{text}"
            );
        }
        assert_eq!(
            Filter::parse("p99>5h").unwrap_err().to_string(),
            "p99>5h: '5h' is not a latency such as 250ms or 1s"
        );
    }

    fn set_lane(m: &mut Model, key: &LaneKey, at: Instant, w: Option<LaneWindow>) {
        m.lanes.insert(
            key.clone(),
            LaneState {
                key: key.clone(),
                stats: w.as_ref().map(LaneWindow::stats),
                updated_at: w.as_ref().map(|_| at),
                window: w,
            },
        );
    }

    #[test]
    fn matching_by_name_registry_and_fresh_lane_data() {
        let mut m = test_model();
        let now = Instant::now();
        // identity v2: 10 rps, 2 % 5xx, slow (p99 in (250, 1000]); v1: fast, no errors.
        set_lane(
            &mut m,
            &lane_key("gateway", "identity", "v2"),
            now,
            Some(stats_window(10.0, 0.2, 1000.0)),
        );
        set_lane(
            &mut m,
            &lane_key("portal", "identity", "v1"),
            now,
            Some(stats_window(40.0, 0.0, 5.0)),
        );
        // photo: ejecting, but its only lane's data is old; gateway has a lane without data.
        set_lane(
            &mut m,
            &lane_key("gateway", "photo", "v1"),
            now.checked_sub(Duration::from_secs(3)).unwrap(),
            Some(LaneWindow {
                breaker: BreakerState::Ejecting {
                    ejected: 1,
                    total: 2,
                },
                ..stats_window(50.0, 50.0, 5.0)
            }),
        );
        set_lane(&mut m, &lane_key("portal", "gateway", "v1"), now, None);

        let matching = |text: &str| -> Vec<&str> {
            let f = Filter::parse(text).unwrap();
            ["gateway", "identity", "photo"]
                .into_iter()
                .filter(|s| m.matches(s, &f, now))
                .collect()
        };
        assert_eq!(matching(""), vec!["gateway", "identity", "photo"]);
        assert_eq!(matching("OTO"), vec!["photo"]);
        assert_eq!(matching("err>1%"), vec!["identity"]);
        assert_eq!(matching("err>=2%"), vec!["identity"]);
        assert_eq!(matching("err>2%"), Vec::<&str>::new());
        assert_eq!(matching("err<1%"), vec!["identity"], "its v1 lane");
        assert_eq!(matching("p99>250ms"), vec!["identity"]);
        assert_eq!(matching("p99>1s"), Vec::<&str>::new());
        assert_eq!(
            matching("rps<1"),
            Vec::<&str>::new(),
            "no data is not 0 rps"
        );
        assert_eq!(matching("rps>30"), vec!["identity"]);
        assert_eq!(matching("version:v2"), vec!["identity"]);
        assert_eq!(matching("version:v1 ent"), vec!["identity"]);
        assert_eq!(matching("breaker:closed"), vec!["identity"]);
        assert_eq!(matching("breaker:ejecting"), Vec::<&str>::new(), "stale");
        assert_eq!(matching("health:critical"), vec!["identity"]);
        assert_eq!(
            matching("health:warning|critical"),
            vec!["identity", "photo"]
        );
        assert_eq!(matching("health:passing ga"), vec!["gateway"]);
        // Fresh again: photo's ejecting lane counts.
        let earlier = now.checked_sub(Duration::from_secs(2)).unwrap();
        let f = Filter::parse("breaker:ejecting err>50%").unwrap();
        assert!(m.matches("photo", &f, earlier));
        assert!(!m.matches("nobody", &f, earlier));
    }
}

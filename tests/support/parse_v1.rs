//! The Envoy stats parser as it was before the scale work (issue 6), kept verbatim as the
//! reference of `tests/parse_equivalence.rs`: the optimised `metrics::parse` must give the
//! same result on every fixture and on generated bodies.
#![allow(dead_code, clippy::all, clippy::pedantic, missing_docs)]
use std::borrow::Cow;
use std::collections::HashMap;

use spine_dash::metrics::{ClusterCounters, ClusterId, SidecarScrape};

/// Why a stats body could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatsError {
    /// A line is not valid text format.
    #[error("line {line}: {reason}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Parses an Envoy `/stats/prometheus` body (see the module docs for what is an error).
pub fn parse_envoy_stats(text: &str) -> Result<SidecarScrape, StatsError> {
    let mut folder = Folder::default();
    let mut samples = 0usize;
    let mut bad = 0usize;
    let mut first_bad: Option<(usize, &'static str, &str)> = None;

    for (index, raw) in text.split('\n').enumerate() {
        let line = raw.trim_ascii();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let outcome = if samples == 0 && bad == 0 {
            parse_sample(line).and_then(|sample| folder.fold(&sample))
        } else {
            folder.line(line)
        };
        match outcome {
            Ok(()) => samples += 1,
            Err(reason) => {
                if samples == 0 && bad == 0 {
                    return Err(StatsError::Syntax {
                        line: index + 1,
                        reason: format!(
                            "not Prometheus text format: {reason}: {:?}",
                            snippet(line)
                        ),
                    });
                }
                bad += 1;
                first_bad.get_or_insert((index + 1, reason, line));
            }
        }
    }

    if bad > samples
        && let Some((line, reason, text)) = first_bad
    {
        return Err(StatsError::Syntax {
            line,
            reason: format!(
                "{bad} of {} lines are not text format, first: {reason}: {:?}",
                bad + samples,
                snippet(text)
            ),
        });
    }
    Ok(folder.finish())
}

/// The start of a line, for error messages.
fn snippet(line: &str) -> &str {
    const MAX_CHARS: usize = 60;
    match line.char_indices().nth(MAX_CHARS) {
        Some((end, _)) => line.get(..end).unwrap_or(line),
        None => line,
    }
}

/// The families folded into [`ClusterCounters`] (plus the server uptime).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    RqTotal,
    RqCompleted,
    RqXx,
    RqPendingOverflow,
    CxOverflow,
    RqTimeBucket,
    RqTimeSum,
    RqTimeCount,
    MembershipHealthy,
    MembershipTotal,
    EjectionsActive,
    CbRqOpen,
    CbRqPendingOpen,
    CbCxOpen,
    Uptime,
}

/// Exact (literal) family lookup.
fn family(name: &str) -> Option<Family> {
    let rest = name.strip_prefix("envoy_")?;
    Some(match rest {
        "cluster_upstream_rq_total" => Family::RqTotal,
        "cluster_upstream_rq_completed" => Family::RqCompleted,
        "cluster_upstream_rq_xx" => Family::RqXx,
        "cluster_upstream_rq_pending_overflow" => Family::RqPendingOverflow,
        "cluster_upstream_cx_overflow" => Family::CxOverflow,
        "cluster_upstream_rq_time_bucket" => Family::RqTimeBucket,
        "cluster_upstream_rq_time_sum" => Family::RqTimeSum,
        "cluster_upstream_rq_time_count" => Family::RqTimeCount,
        "cluster_membership_healthy" => Family::MembershipHealthy,
        "cluster_membership_total" => Family::MembershipTotal,
        "cluster_outlier_detection_ejections_active" => Family::EjectionsActive,
        "cluster_circuit_breakers_default_rq_open" => Family::CbRqOpen,
        "cluster_circuit_breakers_default_rq_pending_open" => Family::CbRqPendingOpen,
        "cluster_circuit_breakers_default_cx_open" => Family::CbCxOpen,
        "server_uptime" => Family::Uptime,
        _ => return None,
    })
}

/// The labels the fold needs; empty values are stored as absent.
#[derive(Debug, Default)]
struct Labels<'a> {
    consul_source_service: Option<Cow<'a, str>>,
    local_cluster: Option<Cow<'a, str>>,
    consul_destination_service: Option<Cow<'a, str>>,
    consul_destination_service_subset: Option<Cow<'a, str>>,
    envoy_cluster_name: Option<Cow<'a, str>>,
    envoy_response_code_class: Option<Cow<'a, str>>,
    le: Option<Cow<'a, str>>,
}

impl<'a> Labels<'a> {
    fn set(&mut self, name: &str, value: Cow<'a, str>) {
        let slot = match name {
            "consul_source_service" => &mut self.consul_source_service,
            "local_cluster" => &mut self.local_cluster,
            "consul_destination_service" => &mut self.consul_destination_service,
            "consul_destination_service_subset" => &mut self.consul_destination_service_subset,
            "envoy_cluster_name" => &mut self.envoy_cluster_name,
            "envoy_response_code_class" => &mut self.envoy_response_code_class,
            "le" => &mut self.le,
            _ => return,
        };
        *slot = if value.is_empty() { None } else { Some(value) };
    }
}

/// One sample line, borrowed from the body.
#[derive(Debug)]
struct Sample<'a> {
    name: &'a str,
    labels: Labels<'a>,
    value: Number,
}

/// A sample value: integers are kept exact (counters can exceed 2^53).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Number {
    Int(u64),
    Float(f64),
}

impl Number {
    fn parse(token: &str) -> Option<Self> {
        if !token.is_empty()
            && token.bytes().all(|b| b.is_ascii_digit())
            && let Ok(n) = token.parse::<u64>()
        {
            return Some(Self::Int(n));
        }
        token.parse::<f64>().ok().map(Self::Float)
    }

    /// As a counter or gauge: `None` for `NaN`, infinities and negatives.
    fn count(self) -> Option<u64> {
        match self {
            Self::Int(n) => Some(n),
            // `as` saturates at u64::MAX and truncates fractions.
            Self::Float(f) if f.is_finite() && f >= 0.0 => Some(f as u64),
            Self::Float(_) => None,
        }
    }

    fn float(self) -> f64 {
        match self {
            Self::Int(n) => n as f64,
            Self::Float(f) => f,
        }
    }
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn skip_blanks(bytes: &[u8], mut i: usize) -> usize {
    while bytes.get(i).copied().is_some_and(is_blank) {
        i += 1;
    }
    i
}

/// End of a metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`) starting at 0; 0 when there is none.
fn metric_name_end(bytes: &[u8]) -> usize {
    match bytes.first() {
        Some(b) if b.is_ascii_alphabetic() || *b == b'_' || *b == b':' => {}
        _ => return 0,
    }
    bytes
        .iter()
        .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_' || *b == b':'))
        .unwrap_or(bytes.len())
}

/// End of a label name (`[a-zA-Z_][a-zA-Z0-9_]*`) starting at `start`; `start` when none.
fn label_name_end(bytes: &[u8], start: usize) -> usize {
    match bytes.get(start) {
        Some(b) if b.is_ascii_alphabetic() || *b == b'_' => {}
        _ => return start,
    }
    let mut i = start + 1;
    while bytes
        .get(i)
        .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
    {
        i += 1;
    }
    i
}

/// Parses a quoted label value whose opening quote is at `start - 1`. Returns the value and
/// the index after the closing quote. Escapes: `\\`, `\"`, `\n`; any other escape is kept
/// as written.
fn label_value(line: &str, start: usize) -> Result<(Cow<'_, str>, usize), &'static str> {
    let bytes = line.as_bytes();
    let mut owned: Option<String> = None;
    let mut seg = start;
    let mut i = start;
    loop {
        let Some(offset) = bytes
            .get(i..)
            .and_then(|rest| rest.iter().position(|&b| b == b'"' || b == b'\\'))
        else {
            return Err("unterminated label value");
        };
        i += offset;
        // `i` is on an ASCII byte, hence a char boundary.
        let piece = line.get(seg..i).ok_or("bad label value")?;
        if bytes.get(i) == Some(&b'"') {
            let value = match owned {
                Some(mut s) => {
                    s.push_str(piece);
                    Cow::Owned(s)
                }
                None => Cow::Borrowed(piece),
            };
            return Ok((value, i + 1));
        }
        // A backslash: decode the escape.
        let s = owned.get_or_insert_with(String::new);
        s.push_str(piece);
        match bytes.get(i + 1) {
            Some(b'\\') => s.push('\\'),
            Some(b'"') => s.push('"'),
            Some(b'n') => s.push('\n'),
            Some(_) => {
                // Unknown escape: keep the backslash; the next char is copied with the
                // following segment.
                s.push('\\');
                i += 1;
                seg = i;
                continue;
            }
            None => return Err("unterminated label value"),
        }
        i += 2;
        seg = i;
    }
}

/// Parses one non-blank, non-comment line completely.
fn parse_sample(line: &str) -> Result<Sample<'_>, &'static str> {
    let bytes = line.as_bytes();
    let name_end = metric_name_end(bytes);
    if name_end == 0 {
        return Err("expected a metric name");
    }
    let name = line.get(..name_end).ok_or("expected a metric name")?;
    let mut labels = Labels::default();
    let mut i = skip_blanks(bytes, name_end);

    if bytes.get(i) == Some(&b'{') {
        i += 1;
        loop {
            i = skip_blanks(bytes, i);
            if bytes.get(i) == Some(&b'}') {
                i += 1;
                break;
            }
            let label_end = label_name_end(bytes, i);
            if label_end == i {
                return Err("expected a label name or `}`");
            }
            let label = line.get(i..label_end).ok_or("expected a label name")?;
            i = skip_blanks(bytes, label_end);
            if bytes.get(i) != Some(&b'=') {
                return Err("expected `=` after a label name");
            }
            i = skip_blanks(bytes, i + 1);
            if bytes.get(i) != Some(&b'"') {
                return Err("expected a quoted label value");
            }
            let (value, after) = label_value(line, i + 1)?;
            labels.set(label, value);
            i = skip_blanks(bytes, after);
            match bytes.get(i) {
                Some(b',') => i += 1,
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return Err("expected `,` or `}` after a label value"),
            }
        }
        i = skip_blanks(bytes, i);
    } else if i == name_end {
        return Err("expected `{` or a blank after the metric name");
    }

    let rest = line.get(i..).ok_or("missing value")?;
    let mut tokens = rest.split([' ', '\t']).filter(|t| !t.is_empty());
    let value = tokens.next().ok_or("missing value")?;
    let value = Number::parse(value).ok_or("value is not a number")?;
    if let Some(timestamp) = tokens.next()
        && timestamp.parse::<i64>().is_err()
    {
        return Err("unexpected text after the value");
    }
    if tokens.next().is_some() {
        return Err("unexpected text after the timestamp");
    }
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// Accumulates clusters while the body is read.
#[derive(Debug, Default)]
struct Folder {
    clusters: Vec<ClusterCounters>,
    index: HashMap<ClusterId, usize>,
    /// Reused lookup key (keeps its capacity: no allocation per sample).
    scratch: ClusterId,
    /// The cluster of the previous sample.
    last: Option<usize>,
    uptime_secs: Option<f64>,
}

fn id_is(id: &ClusterId, source: &str, service: &str, subset: &str) -> bool {
    id.service == service && id.subset == subset && id.source == source
}

impl Folder {
    /// A line after the first: cheap check, full parse only for the families we fold.
    fn line(&mut self, line: &str) -> Result<(), &'static str> {
        let bytes = line.as_bytes();
        let name_end = metric_name_end(bytes);
        if name_end == 0 {
            return Err("expected a metric name");
        }
        match bytes.get(name_end) {
            Some(b) if *b == b'{' || is_blank(*b) => {}
            _ => return Err("expected `{` or a blank after the metric name"),
        }
        let name = line.get(..name_end).ok_or("expected a metric name")?;
        if family(name).is_none() {
            return Ok(());
        }
        let sample = parse_sample(line)?;
        self.fold(&sample)
    }

    /// Adds one sample to its cluster (or ignores it when its family is not needed).
    fn fold(&mut self, sample: &Sample<'_>) -> Result<(), &'static str> {
        let Some(family) = family(sample.name) else {
            return Ok(());
        };
        let labels = &sample.labels;
        if family == Family::Uptime {
            let secs = sample.value.float();
            if secs.is_finite() {
                self.uptime_secs = Some(secs);
            }
            return Ok(());
        }

        // Identity: consul_* labels when present, else envoy_cluster_name (one lane).
        let (service, subset) = if let Some(service) = &labels.consul_destination_service {
            let subset = labels
                .consul_destination_service_subset
                .as_deref()
                .unwrap_or("");
            (service.as_ref(), subset)
        } else if let Some(name) = &labels.envoy_cluster_name {
            (name.as_ref(), "")
        } else {
            // A cluster sample without any cluster identity cannot be attributed.
            return Ok(());
        };
        let source = labels
            .consul_source_service
            .as_deref()
            .or(labels.local_cluster.as_deref())
            .unwrap_or("");

        // Validate the family-specific parts before creating a cluster.
        let class = if family == Family::RqXx {
            match labels.envoy_response_code_class.as_deref() {
                Some("1") => 0,
                Some("2") => 1,
                Some("3") => 2,
                Some("4") => 3,
                Some("5") => 4,
                _ => return Ok(()),
            }
        } else {
            0
        };
        let le = if family == Family::RqTimeBucket {
            let Some(le) = labels.le.as_deref() else {
                return Err("histogram bucket without `le`");
            };
            let Ok(le) = le.parse::<f64>() else {
                return Err("`le` is not a number");
            };
            if le.is_nan() {
                return Ok(());
            }
            le
        } else {
            0.0
        };

        let idx = self.cluster_index(source, service, subset);
        let Some(c) = self.clusters.get_mut(idx) else {
            return Ok(());
        };
        if family == Family::RqTimeSum {
            let sum = sample.value.float();
            if sum.is_finite() {
                c.rq_time.sum += sum;
            }
            return Ok(());
        }
        let Some(n) = sample.value.count() else {
            return Ok(());
        };
        let add = |slot: &mut u64| *slot = slot.saturating_add(n);
        let add_gauge = |slot: &mut Option<u64>| *slot = Some(slot.unwrap_or(0).saturating_add(n));
        match family {
            Family::RqTotal => add(&mut c.rq_total),
            Family::RqCompleted => add(&mut c.rq_completed),
            Family::RqXx => {
                if let Some(slot) = c.rq_xx.get_mut(class) {
                    add(slot);
                }
            }
            Family::RqPendingOverflow => add(&mut c.rq_pending_overflow),
            Family::CxOverflow => add(&mut c.cx_overflow),
            Family::RqTimeCount => add(&mut c.rq_time.count),
            Family::MembershipHealthy => add_gauge(&mut c.membership_healthy),
            Family::MembershipTotal => add_gauge(&mut c.membership_total),
            Family::EjectionsActive => add_gauge(&mut c.ejections_active),
            Family::CbRqOpen => add(&mut c.cb_rq_open),
            Family::CbRqPendingOpen => add(&mut c.cb_rq_pending_open),
            Family::CbCxOpen => add(&mut c.cb_cx_open),
            Family::RqTimeBucket => {
                let buckets = &mut c.rq_time.buckets;
                let same = |b: &&mut (f64, u64)| b.0.total_cmp(&le).is_eq();
                // Envoy writes a cluster's buckets in order: usually a push.
                if let Some(bucket) = buckets.iter_mut().rev().find(same) {
                    bucket.1 = bucket.1.saturating_add(n);
                } else {
                    buckets.push((le, n));
                }
            }
            Family::RqTimeSum | Family::Uptime => {}
        }
        Ok(())
    }

    /// Index of the cluster `(source, service, subset)`, created when new.
    fn cluster_index(&mut self, source: &str, service: &str, subset: &str) -> usize {
        if let Some(last) = self.last
            && let Some(c) = self.clusters.get(last)
            && id_is(&c.id, source, service, subset)
        {
            return last;
        }
        self.scratch.source.clear();
        self.scratch.source.push_str(source);
        self.scratch.service.clear();
        self.scratch.service.push_str(service);
        self.scratch.subset.clear();
        self.scratch.subset.push_str(subset);
        let idx = if let Some(&idx) = self.index.get(&self.scratch) {
            idx
        } else {
            let idx = self.clusters.len();
            self.clusters.push(ClusterCounters {
                id: self.scratch.clone(),
                ..ClusterCounters::default()
            });
            self.index.insert(self.scratch.clone(), idx);
            idx
        };
        self.last = Some(idx);
        idx
    }

    fn finish(mut self) -> SidecarScrape {
        for c in &mut self.clusters {
            c.rq_time.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        self.clusters.sort_by(|a, b| a.id.cmp(&b.id));
        SidecarScrape {
            clusters: self.clusters,
            uptime_secs: self.uptime_secs,
            // Added after v1: v1 never tells repeated series apart (see `parse_equivalence`).
            duplicate_series: 0,
        }
    }
}

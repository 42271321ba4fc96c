//! Literal Prometheus text-format (0.0.4) parser folded into [`ClusterCounters`].
//!
//! The parser is literal: a family name is matched exactly as written, so
//! `envoy_cluster_upstream_rq` and `envoy_cluster_upstream_rq_total` stay two different
//! families (no `OpenMetrics` `_total` stripping, `API_BRIEF.md` §0.7). Only the families listed
//! on [`ClusterCounters`] and `envoy_server_uptime` are folded; the `external_` / `internal_`
//! duplicates and everything else are skipped after reading their name.
//!
//! One pass over the body, no regex; label values are borrowed from the body (an owned copy
//! is made only for a value that contains an escape), so a sample allocates nothing unless it
//! creates a new cluster. Line ends and label-value ends are found with `memchr` (SIMD), a
//! sample's cluster by comparing with the previous one, then (few clusters) a short scan or
//! (many) a hash lookup.
//!
//! # What is an error
//!
//! - An empty body, or one holding only comments and blank lines, is a valid empty scrape.
//! - The **first** non-comment line must be a valid sample (checked in full, whatever its
//!   family). If it is not, the body is not text format at all (an HTML or JSON page, a
//!   plain-text error such as `ACL not found`, Envoy's `name: value` text stats) and
//!   [`StatsError::Syntax`] names that line.
//! - After that, a malformed line is skipped and counted. If malformed lines outnumber valid
//!   samples, the body is rejected with the first malformed line. Lines of families the
//!   dashboard does not use are only checked for a metric name followed by `{` or a blank.
//!
//! # Values (a sidecar can lie; none of it may reach the screen as a number)
//!
//! Counters and gauges are `u64`; a fractional value is truncated.
//!
//! - A **counter** sample (requests, response classes, overflows, latency buckets and count)
//!   whose value is `NaN`, infinite, negative or beyond `u64::MAX` cannot be a counter: it
//!   is counted in [`ClusterCounters::bad_values`], and every window touching that scrape is
//!   a gap (`derive::window`), not a rate computed from a made-up value.
//! - A **gauge** sample (membership, ejections, breaker gauges) with such a value is
//!   skipped: the gauge counts as absent. A bad `_sum` or uptime is skipped (neither makes
//!   a rate).
//! - A latency bucket whose `le` is `NaN` or negative is skipped (no latency is below 0);
//!   `le="-0"` is 0.
//! - A series written twice (same name, same labels in any order) counts once: the first
//!   one wins and the repeat is counted in [`SidecarScrape::duplicate_series`]. Different
//!   series that fold into the same [`ClusterId`] (labels the dashboard does not key on)
//!   are added (saturating).
//! - Labels are found by name, in any order.

use std::borrow::Cow;
use std::collections::HashMap;

use super::{ClusterCounters, ClusterId, SidecarScrape};

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
    let mut folder = Folder::new(text);
    let mut samples = 0usize;
    let mut bad = 0usize;
    let mut first_bad: Option<(usize, &'static str, &str)> = None;

    for (index, raw) in lines(text).enumerate() {
        let line = raw.trim_ascii();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let outcome = if samples == 0 && bad == 0 {
            parse_sample(line).and_then(|sample| folder.fold(&sample, line))
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

/// The body's lines, as `text.split('\n')` gives them (line ends found with `memchr`).
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match memchr::memchr(b'\n', current.as_bytes()) {
            Some(end) => {
                // `\n` is ASCII: both cuts are on char boundaries.
                rest = current.get(end + 1..);
                current.get(..end)
            }
            None => rest.take(),
        }
    })
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

/// 2^64: the first `f64` beyond `u64::MAX`.
const U64_END: f64 = 18_446_744_073_709_551_616.0;

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

    /// As a counter or gauge: `None` for `NaN`, infinities, negatives and values beyond
    /// `u64::MAX`; fractions are truncated.
    fn count(self) -> Option<u64> {
        match self {
            Self::Int(n) => Some(n),
            Self::Float(f) if (0.0..U64_END).contains(&f) => Some(f as u64),
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
            .and_then(|rest| memchr::memchr2(b'"', b'\\', rest))
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
    let mut labels = Labels::default();
    let (name, value) = parse_line_with(line, |name, value| labels.set(name, value))?;
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// A line's labels as a set: sorted `(name, value)` pairs, empty values left out (an empty
/// value is an absent label). `None` when the line does not parse.
fn label_set(line: &str) -> Option<Vec<(&str, Cow<'_, str>)>> {
    let mut set = Vec::new();
    parse_line_with(line, |name, value| {
        if !value.is_empty() {
            set.push((name, value));
        }
    })
    .ok()?;
    set.sort_unstable();
    Some(set)
}

/// Parses one non-blank, non-comment line completely: its metric name and value; each
/// label goes to `label`, in the order written.
fn parse_line_with<'a>(
    line: &'a str,
    mut label: impl FnMut(&'a str, Cow<'a, str>),
) -> Result<(&'a str, Number), &'static str> {
    let bytes = line.as_bytes();
    let name_end = metric_name_end(bytes);
    if name_end == 0 {
        return Err("expected a metric name");
    }
    let name = line.get(..name_end).ok_or("expected a metric name")?;
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
            let label_name = line.get(i..label_end).ok_or("expected a label name")?;
            i = skip_blanks(bytes, label_end);
            if bytes.get(i) != Some(&b'=') {
                return Err("expected `=` after a label name");
            }
            i = skip_blanks(bytes, i + 1);
            if bytes.get(i) != Some(&b'"') {
                return Err("expected a quoted label value");
            }
            let (value, after) = label_value(line, i + 1)?;
            label(label_name, value);
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
    Ok((name, value))
}

/// Up to this many clusters, a sample's cluster is found by a scan, not a hash lookup.
const SCAN_CLUSTERS: usize = 16;

/// Series slots of one cluster that are not latency buckets: one per family, one per
/// response class.
const FIXED_SLOTS: usize = 17;

/// Where each series of one cluster was first written: a line start in the body + 1
/// (0: not yet), to tell a repeated series from a different one folding into the same slot.
#[derive(Debug, Default)]
struct FirstLines {
    fixed: [usize; FIXED_SLOTS],
    /// Parallel to the cluster's `rq_time.buckets` (in the order they were pushed).
    buckets: Vec<usize>,
    /// The buckets were pushed in a non-ascending order (a new bound can then be anywhere).
    buckets_unordered: bool,
}

/// The slot of a family that is not a latency bucket (`class`: response class index);
/// `None` for the others.
fn fixed_slot(family: Family, class: usize) -> Option<usize> {
    Some(match family {
        Family::RqTotal => 0,
        Family::RqCompleted => 1,
        Family::RqXx => 2 + class.min(4),
        Family::RqPendingOverflow => 7,
        Family::CxOverflow => 8,
        Family::RqTimeSum => 9,
        Family::RqTimeCount => 10,
        Family::MembershipHealthy => 11,
        Family::MembershipTotal => 12,
        Family::EjectionsActive => 13,
        Family::CbRqOpen => 14,
        Family::CbRqPendingOpen => 15,
        Family::CbCxOpen => 16,
        // Buckets have their own slots; the uptime is not a cluster's series.
        Family::RqTimeBucket | Family::Uptime => return None,
    })
}

/// Whether `line` (a slice of `text`) repeats the series first written at `first` (a line
/// start in `text` + 1, see [`FirstLines`]): the same label set. Records `line` as the
/// first when `first` is 0. Only called for samples of one slot, so a repeat is rare and
/// checked in full.
fn repeats(text: &str, first: &mut usize, line: &str) -> bool {
    let start = (line.as_ptr() as usize).wrapping_sub(text.as_ptr() as usize);
    if *first == 0 {
        *first = start.saturating_add(1);
        return false;
    }
    let Some(rest) = text.get(*first - 1..) else {
        return false;
    };
    let end = memchr::memchr(b'\n', rest.as_bytes()).unwrap_or(rest.len());
    let Some(earlier) = rest.get(..end) else {
        return false;
    };
    // One slot is one family, so the names are equal: only the labels can differ.
    label_set(earlier.trim_ascii()).is_some_and(|a| label_set(line).is_some_and(|b| a == b))
}

/// Accumulates clusters while the body is read.
#[derive(Debug)]
struct Folder<'t> {
    /// The whole body (lines are located in it by offset).
    text: &'t str,
    clusters: Vec<ClusterCounters>,
    /// Parallel to `clusters`.
    first_lines: Vec<FirstLines>,
    duplicates: u32,
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

impl<'t> Folder<'t> {
    fn new(text: &'t str) -> Self {
        Self {
            text,
            clusters: Vec::new(),
            first_lines: Vec::new(),
            duplicates: 0,
            index: HashMap::new(),
            scratch: ClusterId::default(),
            last: None,
            uptime_secs: None,
        }
    }

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
        self.fold(&sample, line)
    }

    /// Adds one sample (parsed from `line`, a slice of the body) to its cluster, or ignores
    /// it when its family is not needed.
    fn fold(&mut self, sample: &Sample<'_>, line: &str) -> Result<(), &'static str> {
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
            // No latency is below 0 ms; `+ 0.0` makes `-0` the bucket `0`.
            if le.is_nan() || le < 0.0 {
                return Ok(());
            }
            le + 0.0
        } else {
            0.0
        };

        let idx = self.cluster_index(source, service, subset);
        let (Some(c), Some(lines)) = (self.clusters.get_mut(idx), self.first_lines.get_mut(idx))
        else {
            return Ok(());
        };
        // The slot's first line; a latency bucket is created (count 0) when new, in both
        // parallel vectors.
        let mut bucket_at = 0;
        let first = if family == Family::RqTimeBucket {
            let buckets = &mut c.rq_time.buckets;
            // Envoy writes a cluster's buckets in ascending order: usually a push, found
            // without a search.
            let after_last = buckets
                .last()
                .is_none_or(|last| last.0.total_cmp(&le).is_lt());
            let known = if after_last && !lines.buckets_unordered {
                None
            } else {
                buckets.iter().rposition(|b| b.0.total_cmp(&le).is_eq())
            };
            bucket_at = known.unwrap_or_else(|| {
                lines.buckets_unordered |= !after_last;
                buckets.push((le, 0));
                lines.buckets.push(0);
                buckets.len() - 1
            });
            lines.buckets.get_mut(bucket_at)
        } else {
            fixed_slot(family, class).and_then(|slot| lines.fixed.get_mut(slot))
        };
        // A repeated series counts once (the first wins).
        if first.is_some_and(|first| repeats(self.text, first, line)) {
            self.duplicates = self.duplicates.saturating_add(1);
            return Ok(());
        }
        if family == Family::RqTimeSum {
            let sum = sample.value.float();
            if sum.is_finite() && sum >= 0.0 {
                c.rq_time.sum += sum;
            }
            return Ok(());
        }
        let Some(n) = sample.value.count() else {
            let gauge = matches!(
                family,
                Family::MembershipHealthy
                    | Family::MembershipTotal
                    | Family::EjectionsActive
                    | Family::CbRqOpen
                    | Family::CbRqPendingOpen
                    | Family::CbCxOpen
            );
            if !gauge {
                c.bad_values = c.bad_values.saturating_add(1);
            }
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
                if let Some(bucket) = c.rq_time.buckets.get_mut(bucket_at) {
                    add(&mut bucket.1);
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
        // A sidecar has a few upstream clusters: a short scan beats hashing three strings.
        if self.clusters.len() <= SCAN_CLUSTERS
            && let Some(idx) = self
                .clusters
                .iter()
                .position(|c| id_is(&c.id, source, service, subset))
        {
            self.last = Some(idx);
            return idx;
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
            self.first_lines.push(FirstLines::default());
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
            duplicate_series: self.duplicates,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSUL: &str = "consul_source_service=\"portal\",local_cluster=\"portal\",\
        consul_destination_service=\"identity\",consul_destination_service_subset=\"v1\",\
        envoy_cluster_name=\"v1\"";

    fn one(text: &str) -> ClusterCounters {
        let scrape = parse_envoy_stats(text).unwrap();
        assert_eq!(scrape.clusters.len(), 1, "{scrape:?}");
        scrape.clusters.into_iter().next().unwrap()
    }

    #[test]
    fn total_suffix_is_literal() {
        let text = format!(
            "# TYPE envoy_cluster_upstream_rq counter\n\
             envoy_cluster_upstream_rq{{{CONSUL},envoy_response_code=\"200\"}} 1000\n\
             # TYPE envoy_cluster_upstream_rq_total counter\n\
             envoy_cluster_upstream_rq_total{{{CONSUL}}} 7\n\
             envoy_cluster_upstream_rq_totalx{{{CONSUL}}} 99\n"
        );
        let c = one(&text);
        assert_eq!(c.rq_total, 7);
        assert_eq!(c.rq_completed, 0);
    }

    #[test]
    fn external_and_internal_duplicates_are_ignored() {
        let text = format!(
            "envoy_cluster_upstream_rq_completed{{{CONSUL}}} 10\n\
             envoy_cluster_external_upstream_rq_completed{{{CONSUL}}} 10\n\
             envoy_cluster_internal_upstream_rq_completed{{{CONSUL}}} 3\n"
        );
        assert_eq!(one(&text).rq_completed, 10);
    }

    #[test]
    fn labels_by_name_in_any_order_and_escapes() {
        let text = "envoy_cluster_upstream_rq_total{envoy_cluster_name=\"v1\", \
            consul_destination_service_subset=\"v1\" , consul_destination_service = \"a\\\"b\\\\c\\nd\\x\",\
            other=\"},{\\\"\",local_cluster=\"portal\",} 5 1700000000000\n";
        let c = one(text);
        assert_eq!(
            c.id,
            ClusterId {
                source: "portal".into(),
                service: "a\"b\\c\nd\\x".into(),
                subset: "v1".into(),
            }
        );
        assert_eq!(c.rq_total, 5);
    }

    #[test]
    fn identity_rules() {
        // consul labels win over envoy_cluster_name; empty values are absent.
        let text = "envoy_cluster_upstream_rq_total{envoy_cluster_name=\"v2\",consul_source_service=\"\",\
            local_cluster=\"web\",consul_destination_service=\"identity\",consul_destination_service_subset=\"\"} 1\n\
            envoy_cluster_upstream_rq_total{envoy_cluster_name=\"local_app\",consul_source_service=\"web\"} 2\n\
            envoy_cluster_upstream_rq_total{envoy_cluster_name=\"plain\"} 3\n\
            envoy_cluster_upstream_rq_total{} 4\n\
            envoy_cluster_upstream_rq_total 5\n";
        let s = parse_envoy_stats(text).unwrap();
        let ids: Vec<(&str, &str, &str, u64)> = s
            .clusters
            .iter()
            .map(|c| {
                (
                    c.id.source.as_str(),
                    c.id.service.as_str(),
                    c.id.subset.as_str(),
                    c.rq_total,
                )
            })
            .collect();
        assert_eq!(
            ids,
            vec![
                ("", "plain", "", 3),
                ("web", "identity", "", 1),
                ("web", "local_app", "", 2),
            ]
        );
    }

    #[test]
    fn values_and_buckets() {
        let text = format!(
            "envoy_server_uptime{{}} 1.8e+06\n\
             envoy_cluster_upstream_rq_time_bucket{{le=\"+Inf\",{CONSUL}}} 9\n\
             envoy_cluster_upstream_rq_time_bucket{{{CONSUL},le=\"1.8e+06\"}} 8\n\
             envoy_cluster_upstream_rq_time_bucket{{{CONSUL},le=\"0.5\"}} 1\n\
             envoy_cluster_upstream_rq_time_bucket{{{CONSUL},le=\"NaN\"}} 1\n\
             envoy_cluster_upstream_rq_time_sum{{{CONSUL}}} 12.25\n\
             envoy_cluster_upstream_rq_time_count{{{CONSUL}}} 9\n\
             envoy_cluster_upstream_rq_completed{{{CONSUL}}} NaN\n\
             envoy_cluster_upstream_rq_total{{{CONSUL}}} -Inf\n\
             envoy_cluster_upstream_rq_pending_overflow{{{CONSUL}}} -3\n\
             envoy_cluster_upstream_cx_overflow{{{CONSUL}}} 1e300\n\
             envoy_cluster_membership_total{{{CONSUL}}} 99999999999999999999999\n\
             envoy_cluster_membership_healthy{{{CONSUL}}} 2.9\n\
             envoy_cluster_upstream_rq_xx{{{CONSUL},envoy_response_code_class=\"5\"}} 18446744073709551615\n\
             envoy_cluster_upstream_rq_xx{{{CONSUL},envoy_response_code_class=\"7\"}} 4\n"
        );
        let s = parse_envoy_stats(&text).unwrap();
        assert_eq!(s.uptime_secs, Some(1_800_000.0));
        let c = &s.clusters[0];
        assert_eq!(
            c.rq_time.buckets,
            vec![(0.5, 1), (1_800_000.0, 8), (f64::INFINITY, 9)]
        );
        assert!((c.rq_time.sum - 12.25).abs() < 1e-12);
        assert_eq!(c.rq_time.count, 9);
        // NaN / infinite / negative / beyond-u64 counters are bad values (the cluster's
        // windows are gaps); such gauges are absent; fractions truncate; u64::MAX is a u64.
        assert_eq!(c.rq_completed, 0);
        assert_eq!(c.rq_total, 0);
        assert_eq!(c.rq_pending_overflow, 0);
        assert_eq!(c.cx_overflow, 0);
        assert_eq!(c.bad_values, 4);
        assert_eq!(c.membership_total, None);
        assert_eq!(c.membership_healthy, Some(2));
        assert_eq!(c.rq_xx, [0, 0, 0, 0, u64::MAX]);
        assert_eq!(c.ejections_active, None);
        assert_eq!(s.duplicate_series, 0);
    }

    #[test]
    fn buckets_out_of_order_then_repeated_stay_one_bucket_each() {
        // Found by the fuzzer: bounds pushed out of order, then one again after a smaller one.
        let text = format!(
            "envoy_cluster_upstream_rq_time_bucket{{{CONSUL},le=\"300\"}} 3\n\
             envoy_cluster_upstream_rq_time_bucket{{{CONSUL},le=\"30\"}} 1\n\
             envoy_cluster_upstream_rq_time_bucket{{{CONSUL},le=\"60\"}} 2\n\
             envoy_cluster_upstream_rq_time_bucket{{{CONSUL},le=\"300\",x=\"other\"}} 4\n\
             envoy_cluster_upstream_rq_time_bucket{{{CONSUL},le=\"+Inf\"}} 9\n"
        );
        let c = one(&text);
        assert_eq!(
            c.rq_time.buckets,
            vec![(30.0, 1), (60.0, 2), (300.0, 7), (f64::INFINITY, 9)]
        );
    }

    #[test]
    fn not_text_format_is_an_error() {
        for body in [
            "<!DOCTYPE html>\n<html><body>502 Bad Gateway</body></html>\n",
            "{\"stats\":[{\"name\":\"cluster.x.upstream_rq_total\",\"value\":1}]}",
            "ACL not found",
            "cluster.v1.identity.upstream_rq_total: 5\n",
            "\u{0}\u{1}\u{2}binary",
        ] {
            let err = parse_envoy_stats(body).unwrap_err();
            let StatsError::Syntax { line, reason } = &err;
            assert_eq!(*line, 1, "{body:?}");
            assert!(reason.contains("not Prometheus text format"), "{reason}");
        }
        // Mostly garbage after a valid first line.
        let err = parse_envoy_stats("envoy_server_live{} 1\n<a>\n<b>\n").unwrap_err();
        assert_eq!(
            err,
            StatsError::Syntax {
                line: 2,
                reason: "2 of 3 lines are not text format, first: expected a metric name: \"<a>\""
                    .into()
            }
        );
    }

    #[test]
    fn empty_and_comment_only_bodies_are_empty_scrapes() {
        for body in ["", "\n\n", "# TYPE envoy_server_live gauge\n", "  \r\n"] {
            assert_eq!(parse_envoy_stats(body), Ok(SidecarScrape::default()));
        }
    }

    #[test]
    fn a_few_broken_lines_are_skipped() {
        let text = format!(
            "envoy_cluster_upstream_rq_total{{{CONSUL}}} 5\n\
             envoy_cluster_upstream_rq_completed{{{CONSUL}}} 6\n\
             envoy_cluster_upstream_rq_xx{{{CONSUL},envoy_response_code_class=\"2\"}} 6\n\
             envoy_cluster_membership_total{{{CONSUL}}} 2\n\
             envoy_cluster_membership_healthy{{{CONSUL}}} 2\n\
             envoy_cluster_upstream_rq_completed{{{CONSUL},le=\"unterminated}} 6\n\
             envoy_cluster_upstream_rq_total{{{CONSUL}}} 5 6 7\n\
             envoy_cluster_upstream_rq_time_count{{{CONSUL}}} abc\n\
             envoy_cluster_upstream_rq_time_count{{{CONSUL}}}\n"
        );
        let c = one(&text);
        assert_eq!((c.rq_total, c.rq_completed, c.rq_xx[1]), (5, 6, 6));
        assert_eq!(
            (c.membership_healthy, c.membership_total),
            (Some(2), Some(2))
        );
        assert_eq!(c.rq_time.count, 0);
    }

    #[test]
    fn truncated_lines_never_panic() {
        let text =
            format!("envoy_cluster_upstream_rq_time_bucket{{{CONSUL},le=\"+Inf\"}} 123456 17\n");
        for end in 0..=text.len() {
            if let Some(prefix) = text.get(..end) {
                let _ = parse_envoy_stats(prefix);
                let _ = parse_envoy_stats(&format!("envoy_server_live 1\n{prefix}"));
            }
        }
    }
}

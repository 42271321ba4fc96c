//! Deterministic layered layout: callers left, callees right. Computed from the topology
//! only (names and roads), never from time or hash order.

use std::collections::{BTreeMap, BTreeSet};

/// Column and row of every service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    /// `service → (layer, row)`; layer 0 is leftmost.
    pub slots: BTreeMap<String, (usize, usize)>,
    /// Number of layers.
    pub layers: usize,
    /// Largest number of rows in one layer.
    pub max_rows: usize,
}

/// Lays out `services` with `roads` (caller, callee). A service's layer is the longest
/// call path reaching it (cycles are cut); rows follow name order within a layer.
#[must_use]
pub fn layered(services: &BTreeSet<String>, roads: &[(String, String)]) -> Layout {
    let mut layer: BTreeMap<&str, usize> = services.iter().map(|s| (s.as_str(), 0)).collect();
    // Longest-path layering by relaxation, bounded by the node count (cuts cycles).
    for _ in 0..services.len() {
        let mut changed = false;
        for (caller, callee) in roads {
            let (Some(&lc), Some(&le)) = (layer.get(caller.as_str()), layer.get(callee.as_str()))
            else {
                continue;
            };
            if caller != callee && le < lc + 1 && lc + 1 < services.len().max(1) {
                layer.insert(callee.as_str(), lc + 1);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let mut by_layer: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    for (name, l) in &layer {
        by_layer.entry(*l).or_default().push(name);
    }
    let mut out = Layout::default();
    for (l, names) in by_layer {
        out.layers = out.layers.max(l + 1);
        out.max_rows = out.max_rows.max(names.len());
        for (row, name) in names.into_iter().enumerate() {
            out.slots.insert(name.to_owned(), (l, row));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    fn roads(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn demo_topology_layers() {
        let s = set(&[
            "portal",
            "gateway",
            "identity",
            "photo",
            "payment",
            "notification",
        ]);
        let r = roads(&[
            ("portal", "gateway"),
            ("gateway", "identity"),
            ("gateway", "photo"),
            ("gateway", "payment"),
            ("payment", "notification"),
        ]);
        let l = layered(&s, &r);
        assert_eq!(l.slots["portal"], (0, 0));
        assert_eq!(l.slots["gateway"], (1, 0));
        assert_eq!(l.slots["identity"], (2, 0));
        assert_eq!(l.slots["payment"], (2, 1));
        assert_eq!(l.slots["photo"], (2, 2));
        assert_eq!(l.slots["notification"], (3, 0));
        assert_eq!(l.layers, 4);
        // Same topology given in another order → same layout.
        let mut r2 = r.clone();
        r2.reverse();
        assert_eq!(layered(&s, &r2), l);
    }

    #[test]
    fn cycles_terminate() {
        let s = set(&["a", "b"]);
        let l = layered(&s, &roads(&[("a", "b"), ("b", "a")]));
        assert_eq!(l.slots.len(), 2);
    }
}

//! Deterministic layered layout: callers left, callees right. Computed from the topology
//! only (names and roads), never from time or hash order; then kept: [`Placement`] gives a
//! new service a free slot and never moves a placed one.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

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
pub fn layered<S: AsRef<str> + Ord, R: AsRef<str>>(
    services: &BTreeSet<S>,
    roads: &[(R, R)],
) -> Layout {
    let mut layer: BTreeMap<&str, usize> = services.iter().map(|s| (s.as_ref(), 0)).collect();
    // Longest-path layering by relaxation, bounded by the node count (cuts cycles).
    for _ in 0..services.len() {
        let mut changed = false;
        for (from, to) in roads {
            let (from, to) = (from.as_ref(), to.as_ref());
            let (Some(&lc), Some(&le)) = (layer.get(from), layer.get(to)) else {
                continue;
            };
            if from != to && le < lc + 1 && lc + 1 < services.len().max(1) {
                layer.insert(to, lc + 1);
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

/// Where a service sits: its layer (column) and its row in half-row units (rows of the
/// first layout are centred on 0, so a layer of two sits at -1 and +1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// Column, 0 leftmost.
    pub layer: usize,
    /// Row in half-row units.
    pub row2: i32,
    /// Placed before the service had any road: it moves once, when its first road shows.
    pub provisional: bool,
}

/// The kept slots of every service ever placed (persisted with the view).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Placement {
    /// Slot per service name.
    pub slots: BTreeMap<String, Slot>,
}

impl Placement {
    /// Places the services that have no slot (or a provisional one and now a road), keeping
    /// every other slot. When nothing settled exists yet, lays out everything at once
    /// (centred rows); later, each new service takes the first free row below its layer.
    /// Returns whether a slot was added or moved.
    pub fn update<S: AsRef<str> + Ord>(
        &mut self,
        services: &BTreeSet<S>,
        roads: &[(S, S)],
    ) -> bool {
        self.update_near(services, roads, |_| None)
    }

    /// As [`Placement::update`], but a new service for which `near` names a placed key
    /// (an expanded group's members: the group) takes the free row above its column when
    /// that key sits in the upper half of the map (row < 0), else the free row below.
    pub fn update_near<'n, S: AsRef<str> + Ord>(
        &mut self,
        services: &BTreeSet<S>,
        roads: &[(S, S)],
        near: impl Fn(&str) -> Option<&'n str>,
    ) -> bool {
        // Cheap when nothing is new (every frame): only provisional slots need the roads.
        let unplaced = services.iter().any(|s| {
            self.slots
                .get(s.as_ref())
                .is_none_or(|slot| slot.provisional)
        });
        if !unplaced {
            return false;
        }
        let names: BTreeSet<&str> = services.iter().map(AsRef::as_ref).collect();
        let has_road: BTreeSet<&str> = roads
            .iter()
            .map(|(a, b)| (a.as_ref(), b.as_ref()))
            .filter(|(a, b)| a != b && names.contains(a) && names.contains(b))
            .flat_map(|(a, b)| [a, b])
            .collect();
        let todo: Vec<&str> = services
            .iter()
            .map(AsRef::as_ref)
            .filter(|s| match self.slots.get(*s) {
                None => true,
                Some(slot) => slot.provisional && has_road.contains(s),
            })
            .collect();
        if todo.is_empty() {
            return false;
        }
        let all: BTreeSet<String> = self
            .slots
            .keys()
            .cloned()
            .chain(services.iter().map(|s| s.as_ref().to_owned()))
            .collect();
        let road_refs: Vec<(&str, &str)> = roads
            .iter()
            .map(|(a, b)| (a.as_ref(), b.as_ref()))
            .collect();
        let wanted = layered(&all, &road_refs);
        let settled = self.slots.values().any(|s| !s.provisional);
        if !settled {
            // Fresh layout of everything placed so far: rows centred per layer.
            let mut per_layer: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
            for name in &all {
                if let Some(&(layer, _)) = wanted.slots.get(name) {
                    per_layer.entry(layer).or_default().push(name.as_str());
                }
            }
            for (layer, names) in per_layer {
                let n = names.len() as i32;
                for (i, name) in names.into_iter().enumerate() {
                    self.slots.insert(
                        name.to_owned(),
                        Slot {
                            layer,
                            row2: 2 * i as i32 - (n - 1),
                            provisional: !has_road.contains(name),
                        },
                    );
                }
            }
            return true;
        }
        for name in todo {
            self.slots.remove(name);
            let layer = wanted.slots.get(name).map_or(0, |&(l, _)| l);
            let rows = self
                .slots
                .values()
                .filter(|s| s.layer == layer)
                .map(|s| s.row2);
            let (top, bottom) =
                rows.fold((None, None), |(lo, hi): (Option<i32>, Option<i32>), r| {
                    (
                        Some(lo.map_or(r, |l| l.min(r))),
                        Some(hi.map_or(r, |h| h.max(r))),
                    )
                });
            let below = bottom.map_or(0, |b| b + 2);
            // Near an anchor in the upper half of the map: above the column, so the members
            // of one group stay on one side.
            let free_row = match (near(name).and_then(|k| self.slots.get(k)), top) {
                (Some(anchor), Some(top)) if anchor.row2 < 0 => top - 2,
                _ => below,
            };
            self.slots.insert(
                name.to_owned(),
                Slot {
                    layer,
                    row2: free_row,
                    provisional: !has_road.contains(name),
                },
            );
        }
        true
    }

    /// Drops a service's slot (its ghost expired); the row becomes free.
    pub fn forget(&mut self, name: &str) {
        self.slots.remove(name);
    }
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

    fn demo() -> (BTreeSet<String>, Vec<(String, String)>) {
        (
            set(&[
                "portal",
                "gateway",
                "identity",
                "photo",
                "payment",
                "notification",
            ]),
            roads(&[
                ("portal", "gateway"),
                ("gateway", "identity"),
                ("gateway", "photo"),
                ("gateway", "payment"),
                ("payment", "notification"),
            ]),
        )
    }

    #[test]
    fn placement_is_the_same_whatever_the_insertion_order() {
        let (s, r) = demo();
        let mut a = Placement::default();
        a.update(&s, &r);
        let mut r2 = r.clone();
        r2.reverse();
        let s2: BTreeSet<String> = s.iter().rev().cloned().collect();
        let mut b = Placement::default();
        b.update(&s2, &r2);
        assert_eq!(a, b);
        assert_eq!(
            a.slots["gateway"],
            Slot {
                layer: 1,
                row2: 0,
                provisional: false
            }
        );
        assert_eq!(
            [
                a.slots["identity"].row2,
                a.slots["payment"].row2,
                a.slots["photo"].row2
            ],
            [-2, 0, 2]
        );
    }

    #[test]
    fn a_new_service_takes_a_free_slot_and_moves_nobody() {
        let (mut s, mut r) = demo();
        let mut p = Placement::default();
        p.update(&s, &r);
        let before = p.clone();
        s.insert("billing".into());
        r.push(("gateway".into(), "billing".into()));
        assert!(p.update(&s, &r));
        for (name, slot) in &before.slots {
            assert_eq!(p.slots[name], *slot, "{name} moved");
        }
        assert_eq!(
            p.slots["billing"],
            Slot {
                layer: 2,
                row2: 4,
                provisional: false
            }
        );
        // Nothing new: nothing changes.
        assert!(!p.update(&s, &r));
    }

    #[test]
    fn members_of_an_upper_group_go_above_their_column_and_nobody_moves() {
        let s = set(&["edge", "a-*", "b-*", "c"]);
        let r = roads(&[("edge", "a-*"), ("edge", "b-*"), ("edge", "c")]);
        let mut p = Placement::default();
        p.update(&s, &r);
        let before = p.clone();
        assert!(p.slots["a-*"].row2 < 0, "{:?}", p.slots);
        // a-* expands: its members join the map beside it.
        let s2 = set(&["edge", "a-*", "a-1", "a-2", "b-*", "c"]);
        let r2 = roads(&[
            ("edge", "a-1"),
            ("edge", "a-2"),
            ("edge", "b-*"),
            ("edge", "c"),
        ]);
        let near = |n: &str| n.starts_with("a-").then_some("a-*");
        assert!(p.update_near(&s2, &r2, near));
        for (name, slot) in &before.slots {
            assert_eq!(p.slots[name], *slot, "{name} moved");
        }
        let top = before
            .slots
            .values()
            .filter(|x| x.layer == 1)
            .map(|x| x.row2)
            .min()
            .unwrap();
        assert_eq!(p.slots["a-1"].row2, top - 2);
        assert_eq!(p.slots["a-2"].row2, top - 4, "same side");
        assert_eq!(p.slots["a-1"].layer, 1);
    }

    #[test]
    fn services_seen_before_their_roads_settle_once() {
        let (s, r) = demo();
        let mut p = Placement::default();
        p.update(&s, &[]);
        assert!(p.slots.values().all(|x| x.provisional && x.layer == 0));
        assert!(p.update(&s, &r), "first roads settle the layout");
        let mut fresh = Placement::default();
        fresh.update(&s, &r);
        assert_eq!(p, fresh);
        // A service without traffic stays provisional, in a free row, until its road shows.
        let mut s2 = s.clone();
        s2.insert("audit".into());
        p.update(&s2, &r);
        assert!(p.slots["audit"].provisional);
        let mut r2 = r.clone();
        r2.push(("payment".into(), "audit".into()));
        p.update(&s2, &r2);
        assert_eq!(
            p.slots["audit"],
            Slot {
                layer: 3,
                row2: 2,
                provisional: false
            }
        );
        assert_eq!(p.slots["notification"], fresh.slots["notification"]);
    }
}

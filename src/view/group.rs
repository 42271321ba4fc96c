//! Semantic zoom: which nodes the map draws. Services whose names share a prefix (the text
//! up to the first `-`, `.` or `/`: `payments-api`, `payments-ledger` → `payments-*`) form a
//! group. On a large mesh (or when the operator asks) each group is one node — its worst
//! health, its summed traffic — until it is expanded; roads between nodes carry the summed
//! lanes. Pure: names in, nodes out; no egui, no I/O.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use serde::{Deserialize, Serialize};

/// FNV-1a: a fast hash for the short service names the map looks up a few thousand times
/// a frame (the default `SipHash` showed up in the frame profile).
#[derive(Debug, Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A map keyed by names, hashed with [`Fnv`].
pub type NameMap<'a, V> = HashMap<&'a str, V, BuildHasherDefault<Fnv>>;
/// A set of names, hashed with [`Fnv`].
pub type NameSet<'a> = HashSet<&'a str, BuildHasherDefault<Fnv>>;

/// How the map groups services.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Grouping {
    /// Every service is its own station.
    Off,
    /// By name prefix once the mesh has more than [`AUTO_MIN_SERVICES`] services.
    #[default]
    Auto,
    /// Always by name prefix.
    Prefix,
}

impl Grouping {
    /// The words the settings show.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Off => "off: every service",
            Self::Auto => "auto: by name prefix past 80 services",
            Self::Prefix => "by name prefix",
        }
    }

    /// Whether services are grouped on a mesh of `services` services.
    #[must_use]
    pub fn active(self, services: usize) -> bool {
        match self {
            Self::Off => false,
            Self::Auto => services > AUTO_MIN_SERVICES,
            Self::Prefix => true,
        }
    }
}

/// Past this many services, [`Grouping::Auto`] groups them.
pub const AUTO_MIN_SERVICES: usize = 80;

/// With a filter matching at most this many services, their groups open by themselves
/// (the matches are drawn one by one).
pub const FILTER_EXPAND_MAX: usize = 60;

/// The prefix of a service name that names its group, separator included (`payments-`).
#[must_use]
pub fn prefix_of(name: &str) -> Option<&str> {
    let at = name.find(['-', '.', '/'])?;
    (at > 0 && at + 1 < name.len()).then(|| &name[..=at])
}

/// The placement key of a group (`payments-*`): never a service name, as `*` is not
/// allowed in one.
#[must_use]
pub fn group_key(prefix: &str) -> String {
    format!("{prefix}*")
}

/// Groups of at least two services sharing a prefix, by key, members in name order. Empty
/// when a single group would hold every service (nothing to tell apart).
#[must_use]
pub fn groups_of<'a>(names: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, Vec<&'a str>> {
    let mut total = 0;
    let mut by_prefix: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for name in names {
        total += 1;
        if let Some(p) = prefix_of(name) {
            by_prefix.entry(p).or_default().push(name);
        }
    }
    let groups: BTreeMap<String, Vec<&str>> = by_prefix
        .into_iter()
        .filter(|(_, members)| members.len() >= 2)
        .map(|(p, mut members)| {
            members.sort_unstable();
            (group_key(p), members)
        })
        .collect();
    if groups.len() == 1 && groups.values().all(|m| m.len() == total) {
        return BTreeMap::new();
    }
    groups
}

/// What a node stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// One service.
    Service,
    /// A collapsed group of services.
    Group,
}

/// One node of the drawn graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node<'a> {
    /// Placement key: the service name, or the group key (`payments-*`).
    pub key: Cow<'a, str>,
    /// Service or group.
    pub kind: NodeKind,
    /// The services it stands for (itself for a service), in name order.
    pub members: Vec<&'a str>,
}

/// The nodes of one frame: every service belongs to exactly one node.
#[derive(Debug, Clone, Default)]
pub struct Scene<'a> {
    /// Nodes in order of their first member's name.
    pub nodes: Vec<Node<'a>>,
    /// Node index of each service.
    node_of: NameMap<'a, usize>,
    /// Groups drawn as their members: key and member count.
    pub expanded: Vec<(String, usize)>,
}

impl<'a> Scene<'a> {
    /// Nodes for `names` (in name order): each service of a group that is not `open` joins
    /// its group's node; every other service is its own node.
    #[must_use]
    pub fn build(
        names: &[&'a str],
        groups: &BTreeMap<String, Vec<&'a str>>,
        open: impl Fn(&str) -> bool,
    ) -> Self {
        let mut group_of: NameMap<&str> = NameMap::default();
        let mut expanded = Vec::new();
        for (key, members) in groups {
            if open(key) {
                expanded.push((key.clone(), members.len()));
            } else {
                for m in members {
                    group_of.insert(m, key.as_str());
                }
            }
        }
        let mut scene = Scene {
            nodes: Vec::with_capacity(names.len()),
            node_of: NameMap::with_capacity_and_hasher(names.len(), BuildHasherDefault::default()),
            expanded,
        };
        let mut group_node: NameMap<usize> = NameMap::default();
        for &name in names {
            let index = if let Some(&key) = group_of.get(name) {
                *group_node.entry(key).or_insert_with(|| {
                    scene.nodes.push(Node {
                        key: Cow::Owned(key.to_owned()),
                        kind: NodeKind::Group,
                        members: Vec::new(),
                    });
                    scene.nodes.len() - 1
                })
            } else {
                scene.nodes.push(Node {
                    key: Cow::Borrowed(name),
                    kind: NodeKind::Service,
                    members: Vec::new(),
                });
                scene.nodes.len() - 1
            };
            scene.nodes[index].members.push(name);
            scene.node_of.insert(name, index);
        }
        scene
    }

    /// The node that stands for `service`.
    #[must_use]
    pub fn node_of(&self, service: &str) -> Option<usize> {
        self.node_of.get(service).copied()
    }

    /// Placement keys of every node.
    #[must_use]
    pub fn keys(&self) -> BTreeSet<String> {
        self.nodes.iter().map(|n| n.key.to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_split_on_dash_dot_or_slash() {
        assert_eq!(prefix_of("payments-api"), Some("payments-"));
        assert_eq!(prefix_of("payments.ledger.v2"), Some("payments."));
        assert_eq!(prefix_of("team/search"), Some("team/"));
        assert_eq!(prefix_of("gateway"), None);
        assert_eq!(prefix_of("-x"), None);
        assert_eq!(prefix_of("x-"), None);
        assert_eq!(group_key("payments-"), "payments-*");
    }

    #[test]
    fn groups_need_two_members_and_must_tell_services_apart() {
        let names = ["payments-api", "payments-ledger", "search-api", "gateway"];
        let g = groups_of(names);
        assert_eq!(g.len(), 1);
        assert_eq!(g["payments-*"], vec!["payments-api", "payments-ledger"]);
        // One prefix for everything: no grouping at all.
        assert!(groups_of(["svc-1", "svc-2", "svc-3"]).is_empty());
        // ... but one big group beside an ungrouped service is a grouping.
        assert_eq!(groups_of(["svc-1", "svc-2", "edge"]).len(), 1);
    }

    #[test]
    fn collapsed_groups_are_one_node_and_open_ones_their_members() {
        let names = [
            "gateway",
            "payments-api",
            "payments-ledger",
            "search-api",
            "search-index",
        ];
        let groups = groups_of(names);
        let closed = Scene::build(&names, &groups, |_| false);
        let keys: Vec<&str> = closed.nodes.iter().map(|n| n.key.as_ref()).collect();
        assert_eq!(keys, ["gateway", "payments-*", "search-*"]);
        assert_eq!(closed.nodes[1].members, ["payments-api", "payments-ledger"]);
        assert_eq!(closed.nodes[1].kind, NodeKind::Group);
        assert_eq!(closed.node_of("payments-ledger"), Some(1));
        assert_eq!(closed.node_of("search-index"), Some(2));
        assert!(closed.expanded.is_empty());

        let open = Scene::build(&names, &groups, |k| k == "payments-*");
        let keys: Vec<&str> = open.nodes.iter().map(|n| n.key.as_ref()).collect();
        assert_eq!(
            keys,
            ["gateway", "payments-api", "payments-ledger", "search-*"]
        );
        assert_eq!(open.expanded, vec![("payments-*".to_owned(), 2)]);
        assert_eq!(open.node_of("payments-ledger"), Some(2));
        assert!(open.keys().contains("search-*"));
    }

    #[test]
    fn auto_groups_only_large_meshes() {
        assert!(!Grouping::Auto.active(AUTO_MIN_SERVICES));
        assert!(Grouping::Auto.active(AUTO_MIN_SERVICES + 1));
        assert!(Grouping::Prefix.active(2));
        assert!(!Grouping::Off.active(5000));
    }
}

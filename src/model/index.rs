//! Lanes by called service, so per-service questions (filter, breaker, health of a
//! station) do not scan every lane. Rebuilt by [`Model::lanes_updated`] only when the set
//! of lanes changed.

use std::collections::BTreeMap;

use super::types::LaneKey;
use super::{LaneState, Model};

/// Lane keys in `Model::lanes` order, and their positions per called service.
#[derive(Debug, Clone, Default)]
pub(crate) struct LaneIndex {
    keys: Vec<LaneKey>,
    by_service: BTreeMap<String, Vec<usize>>,
}

impl Model {
    /// The lanes into `service` (any caller, any version), in lane order.
    pub fn lanes_into<'a>(&'a self, service: &'a str) -> impl Iterator<Item = &'a LaneState> {
        let index = &self.lane_index;
        // An index that does not cover `lanes` (changed without `lanes_updated`): scan.
        let indexed = index.keys.len() == self.lanes.len();
        let hits = indexed
            .then(|| index.by_service.get(service))
            .flatten()
            .into_iter()
            .flatten()
            .filter_map(|&i| self.lanes.get(&index.keys[i]));
        let scan = (!indexed)
            .then(|| {
                self.lanes
                    .values()
                    .filter(move |l| l.key.service == service)
            })
            .into_iter()
            .flatten();
        hits.chain(scan)
    }

    /// Rebuilds the index when the set of lanes changed.
    pub(super) fn reindex_lanes(&mut self) {
        if self.lanes.keys().eq(self.lane_index.keys.iter()) {
            return;
        }
        let keys: Vec<LaneKey> = self.lanes.keys().cloned().collect();
        let mut by_service: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, key) in keys.iter().enumerate() {
            match by_service.get_mut(&key.service) {
                Some(v) => v.push(i),
                None => {
                    by_service.insert(key.service.clone(), vec![i]);
                }
            }
        }
        self.lane_index = LaneIndex { keys, by_service };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests_support::{lane_key, test_model};
    use std::time::Instant;

    #[test]
    fn lanes_into_a_service_with_and_without_the_index() {
        let mut m = test_model();
        for key in [
            lane_key("gateway", "identity", "v1"),
            lane_key("gateway", "photo", "v1"),
            lane_key("portal", "identity", "v2"),
        ] {
            m.lanes.insert(
                key.clone(),
                LaneState {
                    key,
                    stats: None,
                    window: None,
                    updated_at: None,
                },
            );
        }
        let into = |m: &Model| -> Vec<String> {
            m.lanes_into("identity")
                .map(|l| format!("{}→{}", l.key.caller, l.key.version))
                .collect()
        };
        let expected = vec!["gateway→v1".to_owned(), "portal→v2".to_owned()];
        assert_eq!(into(&m), expected, "scan before any index");
        let now = Instant::now();
        m.lanes_updated(now, m.wall_at(now));
        assert_eq!(m.lane_index.keys.len(), 3);
        assert_eq!(into(&m), expected, "through the index");
        assert_eq!(m.lanes_into("nobody").count(), 0);
    }
}

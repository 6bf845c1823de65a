//! The heartbeat's Redis sets: named in [`crate::store::keys`] with every other key.

pub use crate::store::keys::{ClusterSets, ACTIVE_USER};

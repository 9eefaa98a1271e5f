//! The Raft log of one group, in segment files.

//! The Monotable node.
pub mod storage;

//! Engine tests

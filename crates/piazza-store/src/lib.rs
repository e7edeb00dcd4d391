//! piazza-store

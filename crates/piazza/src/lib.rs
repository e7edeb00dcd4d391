//! piazza

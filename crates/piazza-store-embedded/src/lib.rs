//! piazza-store-embedded

//! piazza-broker

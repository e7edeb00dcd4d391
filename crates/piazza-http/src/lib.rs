//! piazza-http

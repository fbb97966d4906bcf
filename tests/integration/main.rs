//! Integration tests: real processes, real SQLite, the real binary.

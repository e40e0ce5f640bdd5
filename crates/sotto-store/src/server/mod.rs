//! The server store: trait and SQLite backend.

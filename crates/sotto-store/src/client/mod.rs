//! The client's encrypted store (SQLCipher).

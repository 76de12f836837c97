//! The `sim` port: an in-memory generator and sink, no privileges needed.

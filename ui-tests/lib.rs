//! Holds no code: the cases are in `fail/` and `pass/`, run by `tests/ui.rs`.

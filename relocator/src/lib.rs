//! relocator: livepatch relocations and symbol positions.

//! Exit codes shared by every kpbuild command (the meaning kpatch's
//! `create-diff-object` gave them).

/// A patch or module was produced.
pub const SUCCESS: u8 = 0;
/// Bad input or an internal error.
pub const ERROR: u8 = 1;
/// The change cannot be live patched safely.
pub const REFUSED: u8 = 2;
/// The patch makes no functional change.
pub const NO_CHANGE: u8 = 3;

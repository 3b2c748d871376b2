//! elfdiff: which functions a source patch changed in a kernel object.

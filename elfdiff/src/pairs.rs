//! The pairing of symbols between the original and the patched object: what
//! [`crate::correlate`] produces and [`crate::compare`] consults, kept apart
//! from both so that comparison does not depend on how pairs are found.

use crate::input::SymbolId;
use std::collections::HashMap;

/// The pairing of symbols between the original (o) and patched (p) object.
#[derive(Debug, Default)]
pub struct Pairs {
    /// patched → original
    pub p2o: HashMap<SymbolId, SymbolId>,
    /// original → patched
    pub o2p: HashMap<SymbolId, SymbolId>,
    /// Patched symbols whose canonical name has several unpaired candidates
    /// in the original: neither new nor paired.
    pub ambiguous: Vec<SymbolId>,
    /// For each ambiguous symbol: the names, in the original object, of the
    /// candidates that remained.
    pub candidates: HashMap<SymbolId, Vec<String>>,
    /// Numbered static locals that only new code, or references past the
    /// end of the original function's own, reach: new data of the patch.
    pub new_locals: Vec<SymbolId>,
}

impl Pairs {
    /// Records that original `o` and patched `p` are the same symbol.
    pub(crate) fn add(&mut self, o: SymbolId, p: SymbolId) {
        self.p2o.insert(p, o);
        self.o2p.insert(o, p);
    }

    /// Why a patched symbol is ambiguous: the candidates that remained.
    pub fn candidates_note(&self, p: SymbolId) -> String {
        match self.candidates.get(&p) {
            Some(names) if !names.is_empty() => {
                format!(" (candidates in the original: {})", names.join(", "))
            }
            _ => String::new(),
        }
    }
}

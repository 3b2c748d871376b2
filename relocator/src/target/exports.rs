//! What a target exports to modules: Module.symvers, or the `__ksymtab`
//! symbols of an ELF image. The module loader resolves these itself, so a
//! reference to them stays a normal relocation.

use super::image::{Image, RawSym};
use crate::Error;
use object::elf;
use std::collections::HashMap;

/// How one symbol is exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// "vmlinux", or the module path as in Module.symvers (module name for
    /// [`Exports::from_ksymtab`]).
    pub module: String,
    /// `EXPORT_SYMBOL_GPL`.
    pub gpl: bool,
    /// The symbol namespace, if any.
    pub namespace: Option<String>,
    /// The CRC column of Module.symvers.
    pub crc: Option<u64>,
}

/// Symbols a target exports to modules (resolved by the module loader, so normal relocations).
#[derive(Debug, Clone, Default)]
pub struct Exports {
    pub(super) map: HashMap<String, Vec<Export>>,
}

impl Exports {
    /// Parses a 6.12 Module.symvers: `CRC\tSYMBOL\tMODULE\tEXPORT_TYPE\tNAMESPACE`
    /// per line (scripts/mod/modpost.c `write_dump()` / `read_dump()`), where
    /// EXPORT_TYPE is `EXPORT_SYMBOL` or `EXPORT_SYMBOL_GPL` and NAMESPACE may
    /// be empty. Blank lines are skipped; anything else malformed is an error
    /// naming the line.
    pub fn from_module_symvers(text: &str) -> Result<Self, Error> {
        let mut map: HashMap<String, Vec<Export>> = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let bad = |why: &str| Error::BadSymvers {
                line: n + 1,
                why: why.to_string(),
                text: line.to_string(),
            };
            let fields: Vec<&str> = line.splitn(5, '\t').collect();
            let [crc, symbol, module, export, namespace] = fields[..] else {
                return Err(bad("expected 5 tab-separated fields"));
            };
            let hex = crc
                .strip_prefix("0x")
                .or_else(|| crc.strip_prefix("0X"))
                .unwrap_or(crc);
            let crc = u64::from_str_radix(hex, 16).map_err(|_| bad("bad CRC"))?;
            if symbol.is_empty() {
                return Err(bad("empty symbol name"));
            }
            if module.is_empty() {
                return Err(bad("empty module name"));
            }
            let gpl = match export {
                "EXPORT_SYMBOL" => false,
                "EXPORT_SYMBOL_GPL" => true,
                _ => return Err(bad("unknown export type")),
            };
            map.entry(symbol.to_string()).or_default().push(Export {
                module: module.to_string(),
                gpl,
                namespace: (!namespace.is_empty()).then(|| namespace.to_string()),
                crc: Some(crc),
            });
        }
        Ok(Exports { map })
    }

    /// Finds the exports of an ELF image (vmlinux, a `.ko` or a `.o`) from its
    /// `__ksymtab_NAME` symbols (include/linux/export-internal.h `__KSYMTAB`:
    /// defined in section `___ksymtab[_gpl]+NAME`, linked into `__ksymtab` /
    /// `__ksymtab_gpl`). The namespace is read from `__kstrtabns_NAME` when
    /// present. The exporter is "vmlinux" for an executable, else the module's
    /// `.modinfo` `name=`.
    pub fn from_ksymtab(data: &[u8]) -> Result<Self, Error> {
        let img = Image::parse("ksymtab image", data)?;
        let module = if img.e_type == elf::ET_EXEC {
            "vmlinux".to_string()
        } else {
            img.modinfo()
                .iter()
                .find_map(|s| s.strip_prefix(b"name="))
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .ok_or_else(|| Error::BadElf {
                    file: "ksymtab image".into(),
                    why: "not an executable and no .modinfo name=, so the exporting module is unknown"
                        .into(),
                })?
        };
        let namespaces: HashMap<&str, &RawSym<'_>> = img
            .syms
            .iter()
            .filter_map(|s| Some((s.name.strip_prefix("__kstrtabns_")?, s)))
            .filter(|(_, s)| s.section.is_some())
            .collect();
        let mut map: HashMap<String, Vec<Export>> = HashMap::new();
        for s in &img.syms {
            let Some(name) = s.name.strip_prefix("__ksymtab_") else {
                continue;
            };
            let Some(sec) = s.section else { continue };
            let sec_name = img.section_name(sec);
            let gpl = if sec_name.starts_with(b"__ksymtab_gpl")
                || sec_name.starts_with(b"___ksymtab_gpl+")
            {
                true
            } else if sec_name == b"__ksymtab" || sec_name.starts_with(b"___ksymtab+") {
                false
            } else {
                continue;
            };
            let namespace = namespaces
                .get(name)
                .and_then(|ns| img.string_at(ns))
                .filter(|ns| !ns.is_empty())
                .map(|ns| String::from_utf8_lossy(ns).into_owned());
            map.entry(name.to_string()).or_default().push(Export {
                module: module.clone(),
                gpl,
                namespace,
                crc: None,
            });
        }
        Ok(Exports { map })
    }

    /// Whether `name` is exported.
    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// The first exporter of `name`: "vmlinux" or the module path as in Module.symvers.
    pub fn exporter(&self, name: &str) -> Option<&str> {
        self.export(name).map(|e| e.module.as_str())
    }

    /// How `name` is exported (the first entry when several modules export it).
    pub fn export(&self, name: &str) -> Option<&Export> {
        self.map.get(name).and_then(|v| v.first())
    }

    /// Every export entry of `name` (several when different modules export it).
    pub fn exports_of(&self, name: &str) -> &[Export] {
        self.map.get(name).map_or(&[], Vec::as_slice)
    }

    /// Number of exported names.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is exported.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::testutil::*;
    use object::SectionKind;
    use object::SymbolKind as OKind;

    #[test]
    fn module_symvers() {
        let text = "0x12345678\tprintk\tvmlinux\tEXPORT_SYMBOL\t\n\
                    0x00000000\tfoo_gpl\tdrivers/foo/foo\tEXPORT_SYMBOL_GPL\tFOO_NS\n\
                    \n\
                    0xdeadbeef\tbar\tfs/bar/bar\tEXPORT_SYMBOL\t\n";
        let ex = Exports::from_module_symvers(text).unwrap();
        assert_eq!(ex.len(), 3);
        assert!(ex.contains("printk") && !ex.contains("missing"));
        assert_eq!(ex.exporter("printk"), Some("vmlinux"));
        assert_eq!(ex.exporter("foo_gpl"), Some("drivers/foo/foo"));
        assert_eq!(ex.exporter("missing"), None);
        let e = ex.export("foo_gpl").unwrap();
        assert!(e.gpl);
        assert_eq!(e.namespace.as_deref(), Some("FOO_NS"));
        let e = ex.export("printk").unwrap();
        assert_eq!(
            (e.gpl, e.namespace.as_deref(), e.crc),
            (false, None, Some(0x12345678))
        );

        let bad = "0x0\tok\tvmlinux\tEXPORT_SYMBOL\t\n0x0\tbroken\tvmlinux\tEXPORT_SYMBOL\n";
        let err = Exports::from_module_symvers(bad).unwrap_err();
        assert!(matches!(err, Error::BadSymvers { line: 2, .. }), "{err}");
        assert!(err.to_string().contains("line 2") && err.to_string().contains("broken"));
        let err =
            Exports::from_module_symvers("0x0\tx\tvmlinux\tEXPORT_SYMBOL_FOO\t\n").unwrap_err();
        assert!(err.to_string().contains("unknown export type"), "{err}");
        let err = Exports::from_module_symvers("zz\tx\tvmlinux\tEXPORT_SYMBOL\t\n").unwrap_err();
        assert!(err.to_string().contains("bad CRC"), "{err}");
        let err = Exports::from_module_symvers("0x0\tx\t\tEXPORT_SYMBOL\t\n").unwrap_err();
        assert!(err.to_string().contains("empty module"), "{err}");
    }

    fn ksymtab_object(with_modinfo: bool) -> Vec<u8> {
        let mut e = Elf::new();
        let text = e.section(".text", SectionKind::Text, &[0; 0x10]);
        let ksymtab = e.section("__ksymtab", SectionKind::ReadOnlyData, &[0; 24]);
        let gpl = e.section("__ksymtab_gpl", SectionKind::ReadOnlyData, &[0; 12]);
        let strings = e.section(
            "__ksymtab_strings",
            SectionKind::ReadOnlyData,
            b"foo\0MY_NS\0bar\0\0",
        );
        if with_modinfo {
            e.section(
                ".modinfo",
                SectionKind::ReadOnlyData,
                b"license=GPL\0name=my_mod\0",
            );
        }
        e.local("__kstrtab_foo", At::Sec(strings), 0, OKind::Data);
        e.local("__kstrtabns_foo", At::Sec(strings), 4, OKind::Data);
        e.local("__kstrtab_bar", At::Sec(strings), 10, OKind::Data);
        e.local("__kstrtabns_bar", At::Sec(strings), 14, OKind::Data);
        e.local("__ksymtab_foo", At::Sec(ksymtab), 0, OKind::Data);
        e.local("__ksymtab_bar", At::Sec(gpl), 0, OKind::Data);
        e.local("__ksymtab_not_in_ksymtab", At::Sec(text), 0, OKind::Data);
        e.global("foo", At::Sec(text), 0, OKind::Text);
        e.global("bar", At::Sec(text), 8, OKind::Text);
        e.bytes()
    }

    #[test]
    fn ksymtab_exports() {
        let ex = Exports::from_ksymtab(&ksymtab_object(true)).unwrap();
        assert_eq!(ex.len(), 2);
        let foo = ex.export("foo").unwrap();
        assert_eq!(
            (foo.module.as_str(), foo.gpl, foo.namespace.as_deref()),
            ("my_mod", false, Some("MY_NS"))
        );
        let bar = ex.export("bar").unwrap();
        assert_eq!((bar.gpl, bar.namespace.as_deref()), (true, None));
        assert!(!ex.contains("not_in_ksymtab"));

        // An executable exports as vmlinux.
        let ex = Exports::from_ksymtab(&as_exec(&ksymtab_object(false))).unwrap();
        assert_eq!(ex.exporter("foo"), Some("vmlinux"));
        assert_eq!(
            ex.export("foo").unwrap().namespace.as_deref(),
            Some("MY_NS")
        );

        let err = Exports::from_ksymtab(&ksymtab_object(false)).unwrap_err();
        assert!(err.to_string().contains("name="), "{err}");
    }
}

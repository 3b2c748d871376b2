//! Tests of `relocator::resolve::relocate` on small ELF objects built with
//! `object::write`: file-group and position choice for statics, exports and
//! livepatch symbols for globals, module targets with vmlinux behind them,
//! the changed functions' aliases and function list, the post-link
//! conversion, and determinism.

use object::elf;
use object::read::elf::ElfFile64;
use object::write::{self, Object};
use object::{
    Architecture, BinaryFormat, Endianness, Object as _, ObjectSection as _, ObjectSymbol as _,
    RelocationFlags, RelocationTarget, SectionKind, SymbolFlags, SymbolKind, SymbolScope,
};
use relocator::Error;
use relocator::klp::{self, SHF_RELA_LIVEPATCH, SHN_LIVEPATCH};
use relocator::resolve::{
    self, FUNCTIONS_SECTION, FunctionRef, How, PatchInput, PatchedFunction, Relocated, Resolution,
    SymbolRef, Target,
};
use relocator::target::{Exports, TargetKind, TargetSymbols};

const PLT32: u32 = elf::R_X86_64_PLT32.0;
const PC32: u32 = elf::R_X86_64_PC32.0;
const PREFIX: &str = "__kpbuild_new_";
static NO_INTERNAL: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();

// ---------------------------------------------------------------------------
// Building target images (vmlinux and modules).

/// A target image (vmlinux or a `.ko`) under construction: one `.text` and
/// one `.data` section; symbols are added in symbol table order (`object`
/// writes all locals before all globals, so the STT_FILE groups stay whole).
struct Image {
    obj: Object<'static>,
    text: write::SectionId,
    data: write::SectionId,
}

impl Image {
    fn new() -> Self {
        let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
        let text = obj.add_section(Vec::new(), b".text".to_vec(), SectionKind::Text);
        obj.append_section_data(text, &[0xcc; 0x1000], 16);
        let data = obj.add_section(Vec::new(), b".data".to_vec(), SectionKind::Data);
        obj.append_section_data(data, &[0; 0x2000], 16);
        Image { obj, text, data }
    }

    fn file(&mut self, name: &str) -> &mut Self {
        self.obj.add_file_symbol(name.as_bytes().to_vec());
        self
    }

    fn add(&mut self, name: &str, func: bool, value: u64, size: u64, scope: SymbolScope) {
        let (section, kind) = if func {
            (self.text, SymbolKind::Text)
        } else {
            (self.data, SymbolKind::Data)
        };
        self.obj.add_symbol(write::Symbol {
            name: name.as_bytes().to_vec(),
            value,
            size,
            kind,
            scope,
            weak: false,
            section: write::SymbolSection::Section(section),
            flags: SymbolFlags::None,
        });
    }

    /// A static function (in `.text`) or variable (in `.data`).
    fn local(&mut self, name: &str, func: bool, value: u64, size: u64) -> &mut Self {
        self.add(name, func, value, size, SymbolScope::Compilation);
        self
    }

    /// A global function or variable.
    fn global(&mut self, name: &str, func: bool, value: u64, size: u64) -> &mut Self {
        self.add(name, func, value, size, SymbolScope::Dynamic);
        self
    }

    /// The image as a relocatable object (a module `.ko`).
    fn relocatable(&self) -> Vec<u8> {
        self.obj.write().unwrap()
    }

    /// The image as an executable, like vmlinux (only `e_type` differs).
    fn executable(&self) -> Vec<u8> {
        let mut data = self.relocatable();
        data[16..18].copy_from_slice(&elf::ET_EXEC.0.to_le_bytes());
        data
    }

    fn vmlinux(&self) -> TargetSymbols {
        TargetSymbols::from_elf("vmlinux", TargetKind::Vmlinux, &self.executable()).unwrap()
    }

    fn module(&self, name: &str) -> TargetSymbols {
        TargetSymbols::from_elf(name, TargetKind::Module, &self.relocatable()).unwrap()
    }
}

/// The vmlinux most tests patch. Two `a.c` groups share `helper` and `foo`;
/// the first group in the symbol table has the higher addresses, so kallsyms
/// positions (by address) are the reverse of symbol table order.
fn vmlinux_image() -> Image {
    let mut v = Image::new();
    v.file("a.c")
        .local("helper", true, 0x300, 0x20)
        .local("foo", true, 0x340, 0x30)
        .local("only_one", false, 0x1100, 8);
    v.file("b.c")
        .local("b_state", false, 0x1200, 4)
        .local("b_helper", true, 0x400, 0x10);
    v.file("a.c")
        .local("helper", true, 0x100, 0x18)
        .local("foo", true, 0x140, 0x44)
        .local("only_two", false, 0x1000, 8)
        .local("unique_static", true, 0x1c0, 0x10);
    v.global("printk", true, 0x600, 0x20)
        .global("ns_fn", true, 0x640, 0x20)
        .global("internal_fn", true, 0x680, 0x20)
        .global("bar", true, 0x700, 0x50)
        .global("jiffies_like", false, 0x1300, 8)
        .global("mod_exporter_fn", true, 0x780, 0x10);
    v
}

fn vmlinux() -> TargetSymbols {
    vmlinux_image().vmlinux()
}

/// `printk` and `shared_fn` are plain vmlinux exports, `ns_fn` is exported
/// into a namespace, `mod_exporter_fn` is exported by a module.
fn exports() -> Exports {
    Exports::from_module_symvers(
        "0x00000001\tprintk\tvmlinux\tEXPORT_SYMBOL\t\n\
         0x00000002\tns_fn\tvmlinux\tEXPORT_SYMBOL_GPL\tFOO_NS\n\
         0x00000003\tshared_fn\tvmlinux\tEXPORT_SYMBOL\t\n\
         0x00000004\tmod_exporter_fn\tdrivers/other/other\tEXPORT_SYMBOL\t\n",
    )
    .unwrap()
}

// ---------------------------------------------------------------------------
// Building extracted objects.

/// One relocation of the extracted object: (offset, symbol name, type, addend).
type Reloc = (u64, &'static str, u32, i64);

/// An extracted object: a `.text.foo` section holding the changed function,
/// an STT_FILE symbol, undefined GLOBAL symbols for the references and
/// relocations to them.
struct Extracted {
    obj: Object<'static>,
    text: write::SectionId,
    symbols: Vec<(String, write::SymbolId)>,
}

impl Extracted {
    /// `function` is defined at offset 0x10 of `.text.foo`, size 0x30.
    fn new(file: &str, function: &str, local: bool) -> Self {
        let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
        obj.add_file_symbol(file.as_bytes().to_vec());
        let text = obj.add_section(Vec::new(), b".text.foo".to_vec(), SectionKind::Text);
        obj.append_section_data(text, &[0x90; 0x40], 16);
        obj.add_symbol(write::Symbol {
            name: function.as_bytes().to_vec(),
            value: 0x10,
            size: 0x30,
            kind: SymbolKind::Text,
            scope: if local {
                SymbolScope::Compilation
            } else {
                SymbolScope::Dynamic
            },
            weak: false,
            section: write::SymbolSection::Section(text),
            flags: SymbolFlags::None,
        });
        Extracted {
            obj,
            text,
            symbols: Vec::new(),
        }
    }

    fn undefined(&mut self, name: &str) -> write::SymbolId {
        if let Some((_, id)) = self.symbols.iter().find(|(n, _)| n == name) {
            return *id;
        }
        let id = self.obj.add_symbol(write::Symbol {
            name: name.as_bytes().to_vec(),
            value: 0,
            size: 0,
            kind: SymbolKind::Unknown,
            scope: SymbolScope::Dynamic,
            weak: false,
            section: write::SymbolSection::Undefined,
            flags: SymbolFlags::None,
        });
        self.symbols.push((name.to_string(), id));
        id
    }

    fn relocs(mut self, relocs: &[Reloc]) -> Self {
        for &(offset, name, r_type, addend) in relocs {
            let symbol = self.undefined(name);
            self.obj
                .add_relocation(
                    self.text,
                    write::Relocation {
                        offset,
                        symbol,
                        addend,
                        flags: RelocationFlags::Elf {
                            r_type: elf::RelocationType(r_type),
                        },
                    },
                )
                .unwrap();
        }
        self
    }

    fn bytes(&self) -> Vec<u8> {
        self.obj.write().unwrap()
    }
}

fn global(name: &str) -> SymbolRef {
    SymbolRef {
        name: name.to_string(),
        local: false,
    }
}

fn local(name: &str) -> SymbolRef {
    SymbolRef {
        name: name.to_string(),
        local: true,
    }
}

fn function(name: &str, local: bool) -> FunctionRef {
    FunctionRef {
        name: name.to_string(),
        original_name: name.to_string(),
        local,
    }
}

fn input<'a>(
    object: &'a [u8],
    references: Vec<SymbolRef>,
    functions: Vec<FunctionRef>,
    original_locals: &[&str],
) -> PatchInput<'a> {
    PatchInput {
        object,
        file_name: Some("a.c"),
        references,
        functions,
        original_locals: original_locals.iter().map(|s| s.to_string()).collect(),
        alias_prefix: PREFIX,
        callbacks: Vec::new(),
        internal: &NO_INTERNAL,
    }
}

fn lp(name: &str, symbol: &str) -> Resolution {
    Resolution {
        name: name.to_string(),
        how: How::Livepatch(symbol.to_string()),
    }
}

fn exported(name: &str) -> Resolution {
    Resolution {
        name: name.to_string(),
        how: How::Exported,
    }
}

// ---------------------------------------------------------------------------
// Checking the output.

/// Every relocation of `.text.foo` in the output, in order, as (offset,
/// symbol name, type, addend); each target symbol must be an undefined GLOBAL.
fn output_relocs(object: &[u8]) -> Vec<(u64, String, u32, i64)> {
    let file = ElfFile64::<Endianness>::parse(object).unwrap();
    let text = file.section_by_name(".text.foo").unwrap();
    text.relocations()
        .map(|(offset, r)| {
            let RelocationTarget::Symbol(index) = r.target() else {
                panic!("relocation at {offset:#x} is not against a symbol");
            };
            let RelocationFlags::Elf { r_type } = r.flags() else {
                panic!("not an ELF relocation");
            };
            assert!(!r.has_implicit_addend());
            let sym = file.symbol_by_index(index).unwrap();
            let name = sym.name().unwrap().to_string();
            assert!(sym.is_undefined(), "{name} is defined");
            assert_eq!(
                sym.elf_symbol().st_bind(),
                elf::STB_GLOBAL,
                "{name} is not GLOBAL"
            );
            (offset, name, r_type.0, r.addend())
        })
        .collect()
}

/// `relocs` with the symbol names mapped through `resolutions` (exported
/// names stay, livepatch ones become their `.klp.sym.` name).
fn renamed(relocs: &[Reloc], resolutions: &[Resolution]) -> Vec<(u64, String, u32, i64)> {
    relocs
        .iter()
        .map(|&(offset, name, r_type, addend)| {
            let r = resolutions.iter().find(|r| r.name == name).unwrap();
            let name = match &r.how {
                How::Exported | How::Internal => name.to_string(),
                How::Livepatch(s) => s.clone(),
            };
            (offset, name, r_type, addend)
        })
        .collect()
}

/// Every symbol name of the output, with whether it is undefined.
fn symbol_names(object: &[u8]) -> Vec<(String, bool)> {
    let file = ElfFile64::<Endianness>::parse(object).unwrap();
    file.symbols()
        .map(|s| (s.name().unwrap().to_string(), s.is_undefined()))
        .collect()
}

/// The function list section of the output, parsed.
fn function_list(object: &[u8]) -> Vec<PatchedFunction> {
    let file = ElfFile64::<Endianness>::parse(object).unwrap();
    let section = file.section_by_name(FUNCTIONS_SECTION).unwrap();
    let header = section.elf_section_header();
    let e = Endianness::Little;
    use object::read::elf::SectionHeader as _;
    assert_eq!(header.sh_type(e), elf::SHT_PROGBITS);
    assert!(!header.sh_flags(e).contains(elf::SHF_ALLOC), "allocated");
    resolve::parse_functions(section.data().unwrap())
}

/// Checks the alias of a changed function: a GLOBAL FUNC at the same
/// section, value and size as `function`.
fn check_alias(object: &[u8], function: &str, alias: &str) {
    let file = ElfFile64::<Endianness>::parse(object).unwrap();
    let f = file.symbols().find(|s| s.name() == Ok(function)).unwrap();
    let a = file.symbols().find(|s| s.name() == Ok(alias)).unwrap();
    assert_eq!(a.elf_symbol().st_bind(), elf::STB_GLOBAL);
    assert_eq!(a.elf_symbol().st_type(), elf::STT_FUNC);
    assert_eq!(a.kind(), SymbolKind::Text);
    assert_eq!(a.section_index(), f.section_index());
    assert!(a.section_index().is_some());
    assert_eq!((a.address(), a.size()), (f.address(), f.size()));
    assert_eq!((a.address(), a.size()), (0x10, 0x30));
    assert_eq!(
        file.section_by_index(a.section_index().unwrap())
            .unwrap()
            .name(),
        Ok(".text.foo")
    );
}

/// `relocate` on [`input`]'s fields (the error type is the library's).
#[allow(clippy::result_large_err)]
fn run(
    object: &[u8],
    references: Vec<SymbolRef>,
    functions: Vec<FunctionRef>,
    original_locals: &[&str],
    target: Target,
) -> Result<Relocated, Error> {
    resolve::relocate(
        &input(object, references, functions, original_locals),
        target,
    )
}

// ---------------------------------------------------------------------------
// 1. Statics in duplicated file groups.

/// A static referenced from the second `a.c` group (told apart by
/// `only_two`): `helper` is the first by address, so position 1; the unique
/// `unique_static` gets 0. From the first group (told apart by `only_one`),
/// `helper` is position 2.
#[test]
fn static_in_duplicated_file_group_gets_kallsyms_position() {
    let (v, ex) = (vmlinux(), exports());
    let target = Target {
        symbols: &v,
        exports: &ex,
        vmlinux: None,
    };

    let relocs: &[Reloc] = &[
        (0x14, "helper", PLT32, -4),
        (0x1c, "only_two", PC32, -8),
        (0x24, "unique_static", PLT32, -4),
        (0x2c, "helper", PC32, 0x10),
    ];
    let obj = Extracted::new("a.c", "bar", false).relocs(relocs).bytes();
    let out = run(
        &obj,
        vec![local("helper"), local("only_two"), local("unique_static")],
        vec![],
        &[],
        target,
    )
    .unwrap();
    let want = vec![
        lp("helper", ".klp.sym.vmlinux.helper,1"),
        lp("only_two", ".klp.sym.vmlinux.only_two,0"),
        lp("unique_static", ".klp.sym.vmlinux.unique_static,0"),
    ];
    assert_eq!(out.resolutions, want);
    assert_eq!(output_relocs(&out.object), renamed(relocs, &want));
    assert!(out.functions.is_empty());
    // No function, no list; the original names are gone.
    let file = ElfFile64::<Endianness>::parse(&*out.object).unwrap();
    assert!(file.section_by_name(FUNCTIONS_SECTION).is_none());
    let names = symbol_names(&out.object);
    for old in ["helper", "only_two", "unique_static"] {
        assert!(!names.iter().any(|(n, _)| n == old), "{old} left");
    }

    // The other group of the same name.
    let relocs: &[Reloc] = &[(0x14, "helper", PLT32, -4), (0x1c, "only_one", PC32, -8)];
    let obj = Extracted::new("a.c", "bar", false).relocs(relocs).bytes();
    let out = run(
        &obj,
        vec![local("helper"), local("only_one")],
        vec![],
        &[],
        target,
    )
    .unwrap();
    let want = vec![
        lp("helper", ".klp.sym.vmlinux.helper,2"),
        lp("only_one", ".klp.sym.vmlinux.only_one,0"),
    ];
    assert_eq!(out.resolutions, want);
    assert_eq!(output_relocs(&out.object), renamed(relocs, &want));
}

/// A static of a uniquely named file group resolves without other locals.
#[test]
fn static_in_unique_file_group() {
    let (v, ex) = (vmlinux(), exports());
    let target = Target {
        symbols: &v,
        exports: &ex,
        vmlinux: None,
    };
    let relocs: &[Reloc] = &[(0x20, "b_state", PC32, -5)];
    let obj = Extracted::new("b.c", "bar", false).relocs(relocs).bytes();
    let mut inp = input(&obj, vec![local("b_state")], vec![], &[]);
    inp.file_name = Some("b.c");
    let out = resolve::relocate(&inp, target).unwrap();
    let want = vec![lp("b_state", ".klp.sym.vmlinux.b_state,0")];
    assert_eq!(out.resolutions, want);
    assert_eq!(output_relocs(&out.object), renamed(relocs, &want));

    // Without a file name, locals cannot be located.
    inp.file_name = None;
    let err = resolve::relocate(&inp, target).unwrap_err();
    assert!(matches!(err, Error::NoFileSymbol), "{err}");
}

// ---------------------------------------------------------------------------
// 2. Ambiguous file groups.

/// Two `a.c` groups with identical locals: an error naming both candidates,
/// with or without `original_locals`; never a guess.
#[test]
fn identical_file_groups_are_an_error_naming_the_candidates() {
    let mut img = Image::new();
    img.file("a.c")
        .local("helper", true, 0x300, 0x20)
        .local("state", false, 0x1100, 4);
    img.file("a.c")
        .local("helper", true, 0x100, 0x20)
        .local("state", false, 0x1000, 4);
    img.global("other", true, 0x500, 0x10);
    let v = img.vmlinux();
    let ex = exports();
    let target = Target {
        symbols: &v,
        exports: &ex,
        vmlinux: None,
    };
    let obj = Extracted::new("a.c", "bar", false)
        .relocs(&[(0x14, "helper", PLT32, -4)])
        .bytes();
    for original_locals in [&[][..], &["helper", "state"][..]] {
        let err = run(&obj, vec![local("helper")], vec![], original_locals, target).unwrap_err();
        let Error::AmbiguousFileGroup {
            object,
            file,
            locals,
            candidates,
        } = &err
        else {
            panic!("not AmbiguousFileGroup: {err}");
        };
        assert_eq!((object.as_str(), file.as_str()), ("vmlinux", "a.c"));
        let want: Vec<&str> = if original_locals.is_empty() {
            vec!["helper"]
        } else {
            original_locals.to_vec()
        };
        assert_eq!(locals, &want);
        // Both groups, by symbol table index and contents.
        assert!(candidates.contains("helper@0x300"), "{candidates}");
        assert!(candidates.contains("helper@0x100"), "{candidates}");
        assert_eq!(candidates.matches("`a.c` at symtab index").count(), 2);
        let msg = err.to_string();
        assert!(msg.contains("several STT_FILE groups `a.c`"), "{msg}");
    }
}

/// The needed locals (`helper`) fit both `a.c` groups; the original
/// object's other locals pick the second one.
#[test]
fn ambiguous_needed_locals_widen_to_original_locals() {
    let (v, ex) = (vmlinux(), exports());
    let target = Target {
        symbols: &v,
        exports: &ex,
        vmlinux: None,
    };
    let relocs: &[Reloc] = &[(0x30, "helper", PLT32, -4)];
    let obj = Extracted::new("a.c", "bar", false).relocs(relocs).bytes();

    let err = run(&obj, vec![local("helper")], vec![], &[], target).unwrap_err();
    assert!(
        matches!(&err, Error::AmbiguousFileGroup { locals, .. } if locals == &["helper"]),
        "{err}"
    );

    let all = ["helper", "foo", "only_two", "unique_static"];
    let out = run(&obj, vec![local("helper")], vec![], &all, target).unwrap();
    let want = vec![lp("helper", ".klp.sym.vmlinux.helper,1")];
    assert_eq!(out.resolutions, want);
    assert_eq!(output_relocs(&out.object), renamed(relocs, &want));

    // Original locals that fit no group: an error, not a guess.
    let err = run(
        &obj,
        vec![local("helper")],
        vec![],
        &["helper", "only_one", "only_two"],
        target,
    )
    .unwrap_err();
    assert!(matches!(err, Error::FileGroupNotFound { .. }), "{err}");
}

// ---------------------------------------------------------------------------
// 3. Globals against vmlinux.

#[test]
fn vmlinux_globals_exported_namespaced_unexported() {
    let (v, ex) = (vmlinux(), exports());
    let target = Target {
        symbols: &v,
        exports: &ex,
        vmlinux: None,
    };
    let relocs: &[Reloc] = &[
        (0x11, "printk", PLT32, -4),
        (0x18, "ns_fn", PLT32, -4),
        (0x20, "internal_fn", PLT32, -4),
        (0x28, "jiffies_like", PC32, -12),
        (0x30, "printk", PC32, 0x7fff_0000),
    ];
    let obj = Extracted::new("a.c", "bar", false).relocs(relocs).bytes();
    let out = run(
        &obj,
        vec![
            global("printk"),
            global("ns_fn"),
            global("internal_fn"),
            global("jiffies_like"),
        ],
        vec![],
        &[],
        target,
    )
    .unwrap();
    let want = vec![
        exported("printk"),
        lp("ns_fn", ".klp.sym.vmlinux.ns_fn,0"),
        lp("internal_fn", ".klp.sym.vmlinux.internal_fn,0"),
        lp("jiffies_like", ".klp.sym.vmlinux.jiffies_like,0"),
    ];
    assert_eq!(out.resolutions, want);
    let got = output_relocs(&out.object);
    assert_eq!(got, renamed(relocs, &want));
    assert_eq!(got[0].1, "printk");
    // The exported symbol stays a plain undefined symbol.
    let names = symbol_names(&out.object);
    assert!(names.contains(&("printk".to_string(), true)));
    assert!(
        !names
            .iter()
            .any(|(n, _)| n == "ns_fn" || n == "internal_fn")
    );
}

#[test]
fn unknown_global_is_an_error_naming_it() {
    let (v, ex) = (vmlinux(), exports());
    let target = Target {
        symbols: &v,
        exports: &ex,
        vmlinux: None,
    };
    let obj = Extracted::new("a.c", "bar", false)
        .relocs(&[(0x11, "printk", PLT32, -4), (0x18, "nowhere", PLT32, -4)])
        .bytes();
    let err = run(
        &obj,
        vec![global("printk"), global("nowhere")],
        vec![],
        &[],
        target,
    )
    .unwrap_err();
    let Error::GlobalNotFound { object, name, .. } = &err else {
        panic!("not GlobalNotFound: {err}");
    };
    assert_eq!((object.as_str(), name.as_str()), ("vmlinux", "nowhere"));
    assert!(err.to_string().contains("`nowhere`"), "{err}");

    // A global that only exists as statics is not found either, and the
    // message names the statics.
    let obj = Extracted::new("a.c", "bar", false)
        .relocs(&[(0x11, "helper", PLT32, -4)])
        .bytes();
    let err = run(&obj, vec![global("helper")], vec![], &[], target).unwrap_err();
    assert!(
        matches!(&err, Error::GlobalNotFound { name, .. } if name == "helper"),
        "{err}"
    );
    assert!(
        err.to_string().contains("local symbols of that name"),
        "{err}"
    );

    // Exported by a module, not by vmlinux: not a vmlinux export, and
    // resolved against vmlinux's own symbols.
    let obj = Extracted::new("a.c", "bar", false)
        .relocs(&[(0x11, "mod_exporter_fn", PLT32, -4)])
        .bytes();
    let out = run(&obj, vec![global("mod_exporter_fn")], vec![], &[], target).unwrap();
    assert_eq!(
        out.resolutions,
        [lp("mod_exporter_fn", ".klp.sym.vmlinux.mod_exporter_fn,0")]
    );
}

// ---------------------------------------------------------------------------
// 4. Module targets.

/// vmlinux behind a module target: `shared_fn` (exported) and `shared_var`
/// (not) are also defined by the module; `vm_dup` is a global with a
/// same-named static at a lower address, so position 2.
fn vmlinux_for_modules() -> TargetSymbols {
    let mut v = Image::new();
    v.file("core.c")
        .local("vm_dup", true, 0x100, 0x10)
        .local("mod_helper", true, 0x120, 0x10);
    v.global("printk", true, 0x600, 0x20)
        .global("shared_fn", true, 0x640, 0x20)
        .global("shared_var", false, 0x1000, 8)
        .global("vm_internal", true, 0x680, 0x20)
        .global("vm_dup", true, 0x700, 0x20)
        .global("mod_fn", true, 0x740, 0x20);
    v.vmlinux()
}

/// The module `mymod`: `mod_helper` is static in `m.c` and `n.c` (symbol
/// table order opposite to address order), `mod_fn` is the function to
/// patch; `shared_fn` and `shared_var` shadow vmlinux's, `mod_only` exists
/// only here.
fn module_image() -> Image {
    let mut m = Image::new();
    m.file("m.c")
        .local("mod_helper", true, 0x200, 0x18)
        .local("mod_state", false, 0x100, 4)
        .local("mod_static_fn", true, 0x240, 0x28);
    m.file("n.c").local("mod_helper", true, 0x10, 0x18);
    m.global("shared_fn", true, 0x300, 0x20)
        .global("shared_var", false, 0x200, 8)
        .global("mod_only", true, 0x340, 0x20)
        .global("mod_fn", true, 0x380, 0x60);
    m
}

#[test]
fn module_target_resolves_in_module_then_vmlinux() {
    let vm = vmlinux_for_modules();
    let m = module_image().module("mymod");
    let ex = exports();
    let target = Target {
        symbols: &m,
        exports: &ex,
        vmlinux: Some(&vm),
    };
    let relocs: &[Reloc] = &[
        (0x10, "mod_helper", PLT32, -4),
        (0x14, "mod_state", PC32, -8),
        (0x18, "shared_fn", PLT32, -4),
        (0x1c, "shared_var", PC32, -4),
        (0x20, "mod_only", PLT32, -4),
        (0x24, "printk", PLT32, -4),
        (0x28, "vm_internal", PLT32, -4),
        (0x2c, "vm_dup", PC32, 0x20),
    ];
    let obj = Extracted::new("m.c", "mod_fn", false)
        .relocs(relocs)
        .bytes();
    let mut inp = input(
        &obj,
        vec![
            local("mod_helper"),
            local("mod_state"),
            global("shared_fn"),
            global("shared_var"),
            global("mod_only"),
            global("printk"),
            global("vm_internal"),
            global("vm_dup"),
        ],
        vec![function("mod_fn", false)],
        &[],
    );
    inp.file_name = Some("m.c");
    let out = resolve::relocate(&inp, target).unwrap();
    let want = vec![
        // Module symbols: positions in symbol table order.
        lp("mod_helper", ".klp.sym.mymod.mod_helper,1"),
        lp("mod_state", ".klp.sym.mymod.mod_state,0"),
        // Defined by the module: the module's, even though vmlinux has
        // (and exports) the same name.
        lp("shared_fn", ".klp.sym.mymod.shared_fn,0"),
        lp("shared_var", ".klp.sym.mymod.shared_var,0"),
        lp("mod_only", ".klp.sym.mymod.mod_only,0"),
        // Not in the module: vmlinux.
        exported("printk"),
        lp("vm_internal", ".klp.sym.vmlinux.vm_internal,0"),
        lp("vm_dup", ".klp.sym.vmlinux.vm_dup,2"),
    ];
    assert_eq!(out.resolutions, want);
    assert_eq!(output_relocs(&out.object), renamed(relocs, &want));
    let f = vec![PatchedFunction {
        old_name: "mod_fn".into(),
        objname: "mymod".into(),
        sympos: 0,
        old_size: 0x60,
        new_symbol: format!("{PREFIX}0"),
    }];
    assert_eq!(out.functions, f);
    assert_eq!(function_list(&out.object), f);
    check_alias(&out.object, "mod_fn", &f[0].new_symbol);

    // The static from the other file of the module: position 2.
    let relocs: &[Reloc] = &[(0x10, "mod_helper", PLT32, -4)];
    let obj = Extracted::new("n.c", "mod_fn", false)
        .relocs(relocs)
        .bytes();
    let mut inp = input(&obj, vec![local("mod_helper")], vec![], &[]);
    inp.file_name = Some("n.c");
    let out = resolve::relocate(&inp, target).unwrap();
    let want = vec![lp("mod_helper", ".klp.sym.mymod.mod_helper,2")];
    assert_eq!(out.resolutions, want);
    assert_eq!(output_relocs(&out.object), renamed(relocs, &want));

    // Without vmlinux's symbols, the module's own definition still wins
    // over vmlinux's export.
    let relocs: &[Reloc] = &[(0x18, "shared_fn", PLT32, -4), (0x20, "printk", PLT32, -4)];
    let obj = Extracted::new("m.c", "mod_fn", false)
        .relocs(relocs)
        .bytes();
    let mut inp = input(
        &obj,
        vec![global("shared_fn"), global("printk")],
        vec![],
        &[],
    );
    inp.file_name = Some("m.c");
    let alone = Target {
        vmlinux: None,
        ..target
    };
    let out = resolve::relocate(&inp, alone).unwrap();
    let want = vec![
        lp("shared_fn", ".klp.sym.mymod.shared_fn,0"),
        exported("printk"),
    ];
    assert_eq!(out.resolutions, want);
    assert_eq!(output_relocs(&out.object), renamed(relocs, &want));

    // Neither in the module nor in vmlinux.
    let obj = Extracted::new("m.c", "mod_fn", false)
        .relocs(&[(0x10, "nowhere", PLT32, -4)])
        .bytes();
    let mut inp = input(&obj, vec![global("nowhere")], vec![], &[]);
    inp.file_name = Some("m.c");
    let err = resolve::relocate(&inp, target).unwrap_err();
    assert!(
        matches!(&err, Error::GlobalNotFound { object, name, .. }
            if object == "vmlinux" && name == "nowhere"),
        "{err}"
    );
}

/// Globals another unit of the patch defines as new resolve inside the
/// module: a plain undefined reference under their own name, for a vmlinux
/// target and for a module target alike, never looked up in either (the
/// running kernel has no such symbol), and even when the target has a
/// global of that name. Without them in `internal`, the lookup fails.
#[test]
fn new_globals_of_other_units_stay_inside_the_module() {
    let (v, ex) = (vmlinux(), exports());
    let vm = vmlinux_for_modules();
    let m = module_image().module("mymod");
    let internal: std::collections::BTreeSet<String> =
        ["kpb_shared_tag", "kpb_shared_count", "mod_only"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let relocs: &[Reloc] = &[
        (0x10, "kpb_shared_tag", PLT32, -4),
        (0x18, "kpb_shared_count", PC32, -4),
        (0x20, "printk", PLT32, -4),
        (0x28, "mod_only", PLT32, -4),
    ];
    let refs = || {
        vec![
            global("kpb_shared_tag"),
            global("kpb_shared_count"),
            global("printk"),
            global("mod_only"),
        ]
    };
    let internal_ref = |name: &str| Resolution {
        name: name.to_string(),
        how: How::Internal,
    };
    let want = vec![
        internal_ref("kpb_shared_tag"),
        internal_ref("kpb_shared_count"),
        exported("printk"),
        internal_ref("mod_only"),
    ];
    let module_target = Target {
        symbols: &m,
        exports: &ex,
        vmlinux: Some(&vm),
    };
    let vmlinux_target = Target {
        symbols: &v,
        exports: &ex,
        vmlinux: None,
    };
    for (file, target) in [("a.c", vmlinux_target), ("m.c", module_target)] {
        let obj = Extracted::new(file, "bar", false).relocs(relocs).bytes();
        let mut inp = input(&obj, refs(), vec![], &[]);
        inp.file_name = Some(file);
        inp.internal = &internal;
        let out = resolve::relocate(&inp, target).unwrap();
        assert_eq!(out.resolutions, want, "{file}");
        // Plain undefined globals under their own names: the module's link
        // binds them to the defining unit's object.
        assert_eq!(output_relocs(&out.object), renamed(relocs, &want), "{file}");
        assert!(
            !symbol_names(&out.object)
                .iter()
                .any(|(n, _)| n.starts_with(".klp.sym.") && n.contains("kpb_shared")),
            "{file}"
        );

        // Not known as new: looked up in the target, where it is missing.
        let mut inp = input(&obj, refs(), vec![], &[]);
        inp.file_name = Some(file);
        let err = resolve::relocate(&inp, target).unwrap_err();
        assert!(
            matches!(&err, Error::GlobalNotFound { name, .. } if name == "kpb_shared_tag"),
            "{file}: {err}"
        );
    }
}

/// The patched module is not loaded (it is only a `.ko` on disk; vmlinux
/// knows nothing of it): its symbols still resolve against that `.ko`, and
/// a static changed function gets its module position and size.
#[test]
fn module_not_loaded_resolves_against_its_ko() {
    let vm = vmlinux_for_modules();
    let ko = module_image().relocatable();
    // Nothing of the module is in vmlinux.
    assert!(vm.named("mod_only").is_empty());
    let m = TargetSymbols::from_elf("mymod", TargetKind::Module, &ko).unwrap();
    let ex = exports();
    let target = Target {
        symbols: &m,
        exports: &ex,
        vmlinux: Some(&vm),
    };
    let relocs: &[Reloc] = &[(0x20, "mod_only", PLT32, -4)];
    let obj = Extracted::new("m.c", "mod_static_fn", true)
        .relocs(relocs)
        .bytes();
    let mut inp = input(
        &obj,
        vec![global("mod_only")],
        vec![function("mod_static_fn", true)],
        &[],
    );
    inp.file_name = Some("m.c");
    let out = resolve::relocate(&inp, target).unwrap();
    let want = vec![lp("mod_only", ".klp.sym.mymod.mod_only,0")];
    assert_eq!(out.resolutions, want);
    assert_eq!(output_relocs(&out.object), renamed(relocs, &want));
    let f = vec![PatchedFunction {
        old_name: "mod_static_fn".into(),
        objname: "mymod".into(),
        sympos: 0,
        old_size: 0x28,
        new_symbol: format!("{PREFIX}0"),
    }];
    assert_eq!(out.functions, f);
    assert_eq!(function_list(&out.object), f);
    check_alias(&out.object, "mod_static_fn", &f[0].new_symbol);
}

// ---------------------------------------------------------------------------
// 5. The changed functions.

/// A static changed function in a duplicated file group, and a global one:
/// positions and sizes from the target, GLOBAL FUNC aliases at the
/// replacements, and the function list round-trips.
#[test]
fn changed_functions_get_position_size_and_alias() {
    let (v, ex) = (vmlinux(), exports());
    let target = Target {
        symbols: &v,
        exports: &ex,
        vmlinux: None,
    };
    // `foo` (static) of the second `a.c` group: first by address.
    let relocs: &[Reloc] = &[(0x18, "only_two", PC32, -4)];
    let obj = Extracted::new("a.c", "foo", true).relocs(relocs).bytes();
    let out = run(
        &obj,
        vec![local("only_two")],
        vec![function("foo", true)],
        &[],
        target,
    )
    .unwrap();
    let f = vec![PatchedFunction {
        old_name: "foo".into(),
        objname: "vmlinux".into(),
        sympos: 1,
        old_size: 0x44,
        new_symbol: format!("{PREFIX}0"),
    }];
    assert_eq!(out.functions, f);
    assert_eq!(function_list(&out.object), f);
    check_alias(&out.object, "foo", &f[0].new_symbol);
    assert_eq!(
        out.resolutions,
        [lp("only_two", ".klp.sym.vmlinux.only_two,0")]
    );
    assert_eq!(
        output_relocs(&out.object),
        renamed(relocs, &out.resolutions)
    );
    // The static itself stays local (the alias is what the glue uses).
    let file = ElfFile64::<Endianness>::parse(&*out.object).unwrap();
    let foo = file.symbols().find(|s| s.name() == Ok("foo")).unwrap();
    assert_eq!(foo.elf_symbol().st_bind(), elf::STB_LOCAL);

    // The first `a.c` group's `foo`: second by address. The function alone
    // picks no group; `only_one` does.
    let obj = Extracted::new("a.c", "foo", true)
        .relocs(&[(0x18, "only_one", PC32, -4)])
        .bytes();
    let out = run(
        &obj,
        vec![local("only_one")],
        vec![function("foo", true)],
        &[],
        target,
    )
    .unwrap();
    assert_eq!(
        (out.functions[0].sympos, out.functions[0].old_size),
        (2, 0x30)
    );

    // A global changed function needs no file group; unique, so position 0.
    let obj = Extracted::new("a.c", "bar", false)
        .relocs(&[(0x18, "printk", PLT32, -4)])
        .bytes();
    let out = run(
        &obj,
        vec![global("printk")],
        vec![function("bar", false)],
        &[],
        target,
    )
    .unwrap();
    let f = vec![PatchedFunction {
        old_name: "bar".into(),
        objname: "vmlinux".into(),
        sympos: 0,
        old_size: 0x50,
        new_symbol: format!("{PREFIX}0"),
    }];
    assert_eq!(out.functions, f);
    assert_eq!(function_list(&out.object), f);
    check_alias(&out.object, "bar", &f[0].new_symbol);
    assert_eq!(out.resolutions, [exported("printk")]);

    // A renamed changed function: looked up by its original name, aliased
    // from its name in the object.
    let obj = Extracted::new("a.c", "bar.cold_copy", false)
        .relocs(&[(0x18, "printk", PLT32, -4)])
        .bytes();
    let mut inp = input(&obj, vec![global("printk")], vec![], &[]);
    inp.functions = vec![FunctionRef {
        name: "bar.cold_copy".into(),
        original_name: "bar".into(),
        local: false,
    }];
    let out = resolve::relocate(&inp, target).unwrap();
    assert_eq!(out.functions, f);
    check_alias(&out.object, "bar.cold_copy", &f[0].new_symbol);

    // A changed function the object does not define is an error.
    inp.functions[0].name = "missing".into();
    let err = resolve::relocate(&inp, target).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn parse_functions_round_trips_and_skips_junk() {
    let f = vec![
        PatchedFunction {
            old_name: "foo".into(),
            objname: "vmlinux".into(),
            sympos: 2,
            old_size: 0x44,
            new_symbol: format!("{PREFIX}0"),
        },
        PatchedFunction {
            old_name: "mod_fn".into(),
            objname: "mymod".into(),
            sympos: 0,
            old_size: 96,
            new_symbol: format!("{PREFIX}1"),
        },
    ];
    let text = "vmlinux foo 2 68 __kpbuild_new_0\n\
                too few fields\n\
                vmlinux foo x 68 bad_pos\n\
                mymod mod_fn 0 96 __kpbuild_new_1\n";
    assert_eq!(resolve::parse_functions(text.as_bytes()), f);
    assert!(resolve::parse_functions(b"").is_empty());
}

// ---------------------------------------------------------------------------
// 6. Round trip through object, goblin, the livepatch conversion, readelf.

/// The vmlinux patch used by the round-trip and determinism tests.
fn full_patch() -> (Vec<u8>, Vec<Reloc>) {
    let relocs: Vec<Reloc> = vec![
        (0x11, "printk", PLT32, -4),
        (0x16, "internal_fn", PLT32, -4),
        (0x1b, "helper", PLT32, -4),
        (0x20, "only_two", PC32, -8),
        (0x28, "ns_fn", PLT32, -4),
        (0x2e, "internal_fn", PC32, 0x40),
    ];
    let obj = Extracted::new("a.c", "foo", true).relocs(&relocs).bytes();
    (obj, relocs)
}

fn relocate_full(obj: &[u8], v: &TargetSymbols, ex: &Exports) -> Relocated {
    let inp = input(
        obj,
        vec![
            global("printk"),
            global("internal_fn"),
            local("helper"),
            local("only_two"),
            global("ns_fn"),
        ],
        vec![function("foo", true)],
        &["helper", "foo", "only_two", "unique_static"],
    );
    resolve::relocate(
        &inp,
        Target {
            symbols: v,
            exports: ex,
            vmlinux: None,
        },
    )
    .unwrap()
}

/// Writes `data` to a temporary file and runs `readelf -W -a` on it; `None`
/// when readelf is missing (a `testbed::oracle`).
fn readelf(data: &[u8], tag: &str) -> Option<String> {
    let readelf = testbed::oracle::tool("readelf", "binutils")?;
    let path = std::env::temp_dir().join(format!(
        "kpbuild-resolve-test-{}-{tag}.o",
        std::process::id()
    ));
    std::fs::write(&path, data).unwrap();
    let out = std::process::Command::new(readelf)
        .args(["-W", "-a"])
        .arg(&path)
        .output();
    std::fs::remove_file(&path).unwrap();
    match out {
        Ok(out) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success(), "readelf failed: {text}");
            Some(text)
        }
        Err(e) => panic!("readelf: {e}"),
    }
}

fn assert_readelf_clean(data: &[u8], tag: &str) {
    if let Some(text) = readelf(data, tag) {
        for line in text.lines() {
            assert!(
                !line.contains("readelf: Warning") && !line.contains("readelf: Error"),
                "{tag}: {line}\n{text}"
            );
        }
    }
}

#[test]
fn output_round_trips_through_object_goblin_klp_and_readelf() {
    let (v, ex) = (vmlinux(), exports());
    let (obj, relocs) = full_patch();
    let out = relocate_full(&obj, &v, &ex);
    let want = vec![
        exported("printk"),
        lp("internal_fn", ".klp.sym.vmlinux.internal_fn,0"),
        lp("helper", ".klp.sym.vmlinux.helper,1"),
        lp("only_two", ".klp.sym.vmlinux.only_two,0"),
        lp("ns_fn", ".klp.sym.vmlinux.ns_fn,0"),
    ];
    assert_eq!(out.resolutions, want);

    // object.
    let parsed = object::File::parse(&*out.object).unwrap();
    assert_eq!(parsed.kind(), object::ObjectKind::Relocatable);
    assert_eq!(parsed.architecture(), Architecture::X86_64);
    assert_eq!(output_relocs(&out.object), renamed(&relocs, &want));

    // goblin.
    let g = goblin::elf::Elf::parse(&out.object).unwrap();
    let sym_name = |g: &goblin::elf::Elf, i: usize| {
        let s = g.syms.get(i).unwrap();
        (g.strtab.get_at(s.st_name).unwrap().to_string(), s)
    };
    let mut goblin_relocs = Vec::new();
    for (shndx, rels) in &g.shdr_relocs {
        let target = g.section_headers[g.section_headers[*shndx].sh_info as usize].sh_name;
        assert_eq!(g.shdr_strtab.get_at(target), Some(".text.foo"));
        for r in rels.iter() {
            let (name, s) = sym_name(&g, r.r_sym);
            assert_eq!(s.st_shndx, 0, "{name}");
            assert_eq!(s.st_bind(), goblin::elf::sym::STB_GLOBAL, "{name}");
            goblin_relocs.push((r.r_offset, name, r.r_type, r.r_addend.unwrap()));
        }
    }
    assert_eq!(goblin_relocs, renamed(&relocs, &want));
    // Locals before globals, as sh_info says.
    let symtab = g
        .section_headers
        .iter()
        .find(|s| s.sh_type == goblin::elf::section_header::SHT_SYMTAB)
        .unwrap();
    for (i, s) in g.syms.iter().enumerate() {
        assert_eq!(
            s.st_bind() == goblin::elf::sym::STB_LOCAL,
            i < symtab.sh_info as usize,
            "symbol {i}"
        );
    }
    let fl = g
        .section_headers
        .iter()
        .find(|s| g.shdr_strtab.get_at(s.sh_name) == Some(FUNCTIONS_SECTION))
        .unwrap();
    let data = &out.object[fl.sh_offset as usize..][..fl.sh_size as usize];
    assert_eq!(resolve::parse_functions(data), out.functions);
    assert_readelf_clean(&out.object, "prelink");

    // The livepatch conversion.
    let lp_obj = klp::convert_to_livepatch(&out.object).unwrap();
    let g = goblin::elf::Elf::parse(&lp_obj).unwrap();
    let klp_rela = g
        .section_headers
        .iter()
        .position(|s| g.shdr_strtab.get_at(s.sh_name) == Some(".klp.rela.vmlinux..text.foo"))
        .expect(".klp.rela.vmlinux..text.foo");
    let header = &g.section_headers[klp_rela];
    assert_eq!(header.sh_type, goblin::elf::section_header::SHT_RELA);
    let flags = u64::from(goblin::elf::section_header::SHF_ALLOC)
        | u64::from(goblin::elf::section_header::SHF_INFO_LINK)
        | SHF_RELA_LIVEPATCH;
    assert_eq!(header.sh_flags & flags, flags);
    assert_eq!(
        g.shdr_strtab
            .get_at(g.section_headers[header.sh_info as usize].sh_name),
        Some(".text.foo")
    );
    let mut in_klp = Vec::new();
    let mut in_plain = Vec::new();
    for (shndx, rels) in &g.shdr_relocs {
        let name = g
            .shdr_strtab
            .get_at(g.section_headers[*shndx].sh_name)
            .unwrap();
        for r in rels.iter() {
            let (sym, s) = sym_name(&g, r.r_sym);
            let entry = (r.r_offset, sym.clone(), r.r_type, r.r_addend.unwrap());
            if *shndx == klp_rela {
                assert_eq!(s.st_shndx, usize::from(SHN_LIVEPATCH), "{sym}");
                assert_eq!(s.st_bind(), goblin::elf::sym::STB_GLOBAL, "{sym}");
                in_klp.push(entry);
            } else {
                assert_eq!(name, ".rela.text.foo");
                in_plain.push(entry);
            }
        }
    }
    let all = renamed(&relocs, &want);
    let (want_klp, want_plain): (Vec<_>, Vec<_>) =
        all.into_iter().partition(|r| r.1.starts_with(".klp.sym."));
    assert_eq!(in_klp, want_klp);
    assert_eq!(in_plain, want_plain);
    assert_eq!(in_plain.len(), 1);
    assert_eq!(in_plain[0].1, "printk");
    assert_readelf_clean(&lp_obj, "livepatch");
    // Converting again changes nothing.
    assert_eq!(klp::convert_to_livepatch(&lp_obj).unwrap(), lp_obj);
}

/// A module patch converts into one `.klp.rela` section per object.
#[test]
fn module_output_converts_per_object() {
    let vm = vmlinux_for_modules();
    let m = module_image().module("mymod");
    let ex = exports();
    let obj = Extracted::new("m.c", "mod_fn", false)
        .relocs(&[
            (0x10, "mod_helper", PLT32, -4),
            (0x18, "vm_internal", PLT32, -4),
            (0x20, "printk", PLT32, -4),
        ])
        .bytes();
    let mut inp = input(
        &obj,
        vec![local("mod_helper"), global("vm_internal"), global("printk")],
        vec![function("mod_fn", false)],
        &[],
    );
    inp.file_name = Some("m.c");
    let out = resolve::relocate(
        &inp,
        Target {
            symbols: &m,
            exports: &ex,
            vmlinux: Some(&vm),
        },
    )
    .unwrap();
    let lp_obj = klp::convert_to_livepatch(&out.object).unwrap();
    let file = ElfFile64::<Endianness>::parse(&*lp_obj).unwrap();
    let names: Vec<&str> = file
        .sections()
        .filter_map(|s| s.name().ok())
        .filter(|n| n.starts_with(".klp.rela."))
        .collect();
    assert_eq!(
        names,
        [".klp.rela.mymod..text.foo", ".klp.rela.vmlinux..text.foo"]
    );
    assert_readelf_clean(&lp_obj, "module-livepatch");
}

// ---------------------------------------------------------------------------
// 7. Determinism.

#[test]
fn same_inputs_give_identical_bytes() {
    let (obj, _) = full_patch();
    let (v1, ex1) = (vmlinux(), exports());
    let a = relocate_full(&obj, &v1, &ex1);
    // Separately built targets and inputs, too.
    let (v2, ex2) = (vmlinux(), exports());
    let (obj2, _) = full_patch();
    assert_eq!(obj, obj2);
    let b = relocate_full(&obj2, &v2, &ex2);
    let c = relocate_full(&obj, &v1, &ex1);
    assert_eq!(a.object, b.object);
    assert_eq!(a.object, c.object);
    assert_eq!(a.functions, b.functions);
    assert_eq!(a.resolutions, b.resolutions);
    assert_eq!(
        klp::convert_to_livepatch(&a.object).unwrap(),
        klp::convert_to_livepatch(&b.object).unwrap()
    );
    // Two functions: aliases numbered in input order.
    let relocs: &[Reloc] = &[(0x18, "only_two", PC32, -4)];
    let mut e = Extracted::new("a.c", "foo", true).relocs(relocs);
    e.obj.add_symbol(write::Symbol {
        name: b"bar".to_vec(),
        value: 0x30,
        size: 0x10,
        kind: SymbolKind::Text,
        scope: SymbolScope::Dynamic,
        weak: false,
        section: write::SymbolSection::Section(e.text),
        flags: SymbolFlags::None,
    });
    let obj = e.bytes();
    let go = || {
        run(
            &obj,
            vec![local("only_two")],
            vec![function("foo", true), function("bar", false)],
            &[],
            Target {
                symbols: &v1,
                exports: &ex1,
                vmlinux: None,
            },
        )
        .unwrap()
    };
    let (x, y) = (go(), go());
    assert_eq!(x.object, y.object);
    let news: Vec<&str> = x.functions.iter().map(|f| f.new_symbol.as_str()).collect();
    assert_eq!(news, [format!("{PREFIX}0"), format!("{PREFIX}1")]);
    assert_eq!(function_list(&x.object), x.functions);
}

/// A jump-label entry whose static key lives in the target module cannot be
/// honoured: the kernel reads `__jump_table` when the livepatch module loads,
/// but livepatch relocations into a module are applied only when that module
/// loads. The same key in vmlinux is fine.
#[test]
fn jump_label_key_in_a_module_is_refused() {
    let vm = vmlinux_for_modules();
    let m = module_image().module("mymod");
    let ex = exports();
    let target = Target {
        symbols: &m,
        exports: &ex,
        vmlinux: Some(&vm),
    };
    let with_jump_table = |key: &str| {
        let mut e = Extracted::new("m.c", "mod_fn", false);
        let table = e
            .obj
            .add_section(Vec::new(), b"__jump_table".to_vec(), SectionKind::Data);
        e.obj.append_section_data(table, &[0; 16], 8);
        let key_symbol = e.undefined(key);
        let code = e.obj.section_symbol(e.text);
        for (offset, symbol, r_type, addend) in [
            (0, code, PC32, 0x14),
            (4, code, PC32, 0x20),
            (8, key_symbol, elf::R_X86_64_PC64.0, 0),
        ] {
            e.obj
                .add_relocation(
                    table,
                    write::Relocation {
                        offset,
                        symbol,
                        addend,
                        flags: RelocationFlags::Elf {
                            r_type: elf::RelocationType(r_type),
                        },
                    },
                )
                .unwrap();
        }
        e.bytes()
    };
    let obj = with_jump_table("mod_state");
    let mut inp = input(
        &obj,
        vec![local("mod_state")],
        vec![function("mod_fn", false)],
        &[],
    );
    inp.file_name = Some("m.c");
    let err = resolve::relocate(&inp, target).unwrap_err().to_string();
    assert!(err.contains("__jump_table references mod_state"), "{err}");
    assert!(err.contains("module mymod"), "{err}");

    let obj = with_jump_table("vm_internal");
    let mut inp = input(
        &obj,
        vec![global("vm_internal")],
        vec![function("mod_fn", false)],
        &[],
    );
    inp.file_name = Some("m.c");
    let out = resolve::relocate(&inp, target).unwrap();
    assert_eq!(
        out.resolutions,
        vec![lp("vm_internal", ".klp.sym.vmlinux.vm_internal,0")]
    );
}

// ---------------------------------------------------------------------------
// Callbacks.

/// A callback gets a global alias `PREFIXcb_KIND` at its function, for the
/// module glue; a callback the object does not define is an error naming it.
#[test]
fn callbacks_get_global_aliases() {
    let (v, ex) = (vmlinux(), exports());
    let target = Target {
        symbols: &v,
        exports: &ex,
        vmlinux: None,
    };
    let obj = Extracted::new("a.c", "bar", false).bytes();
    let mut inp = input(&obj, vec![], vec![], &[]);
    inp.callbacks = vec![("post_patch".into(), "bar".into())];
    let out = resolve::relocate(&inp, target).unwrap();
    let alias = format!("{PREFIX}cb_post_patch");
    assert_eq!(
        out.callbacks,
        vec![("post_patch".to_string(), alias.clone())]
    );
    check_alias(&out.object, "bar", &alias);

    inp.callbacks = vec![("pre_patch".into(), "nosuch".into())];
    let err = resolve::relocate(&inp, target).unwrap_err();
    assert!(
        err.to_string().contains("callback nosuch is not defined"),
        "{err}"
    );
}

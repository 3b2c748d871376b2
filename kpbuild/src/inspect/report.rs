//! What `kpbuild inspect` reports: the values [`super::inspect`] returns,
//! serialized as they are for `--json` (field order is the output order).

use serde::Serialize;

/// What kind of file was inspected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A relocatable object (`kpbuild diff -o`).
    Object,
    /// A kernel module: has `.modinfo` or `.gnu.linkonce.this_module`.
    Module,
}

/// One line of `.kpbuild.functions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Function {
    /// The object the function lives in (`vmlinux` or a module name).
    pub object: String,
    /// The function being replaced.
    pub name: String,
    /// Its livepatch position (0: unique).
    pub position: u32,
    /// Its size in the target.
    pub old_size: u64,
    /// The global symbol of the replacement in this file.
    pub new_symbol: String,
}

/// One livepatch callback (`.kpbuild.callback_list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Callback {
    /// The object it is registered on (`vmlinux` or a module name).
    pub object: String,
    /// `pre_patch`, `post_patch`, `pre_unpatch` or `post_unpatch`.
    pub kind: String,
    /// The function the patch declared.
    pub function: String,
    /// Its global alias in this file, which the glue registers.
    pub symbol: String,
}

/// A defined global function (the fallback list without `.kpbuild.functions`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GlobalFunction {
    /// Symbol name.
    pub name: String,
    /// Section it is defined in.
    pub section: String,
    /// Symbol size.
    pub size: u64,
}

/// One entry of a livepatch relocation section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KlpRelocation {
    /// The relocation section (`.klp.rela.OBJ.SEC`).
    pub section: String,
    /// The section it applies to (`sh_info`).
    pub applies_to: String,
    /// Offset in `applies_to`.
    pub offset: u64,
    /// Relocation type, e.g. `R_X86_64_PC32`.
    #[serde(rename = "type")]
    pub r_type: String,
    /// The symbol's full name.
    pub symbol: String,
    /// Object part of a `.klp.sym.OBJ.NAME,POS` name.
    pub object: Option<String>,
    /// Name part.
    pub name: Option<String>,
    /// Position part.
    pub position: Option<u32>,
    /// Addend.
    pub addend: i64,
}

/// An undefined symbol the module loader resolves from the kernel's exports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoaderSymbol {
    /// Symbol name.
    pub name: String,
    /// Weak: the loader accepts it unresolved (value 0).
    pub weak: bool,
}

/// One `key=value` of `.modinfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModinfoField {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
}

/// The `.modinfo` of a module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Modinfo {
    /// `name=`.
    pub name: Option<String>,
    /// `vermagic=`.
    pub vermagic: Option<String>,
    /// `livepatch=` (`Y` for a livepatch module).
    pub livepatch: Option<String>,
    /// `license=`.
    pub license: Option<String>,
    /// Every field in file order.
    pub fields: Vec<ModinfoField>,
}

/// The appended module signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Signature {
    /// Whether the file ends with `~Module signature appended~\n`.
    pub appended: bool,
    /// `sig_len` of `struct module_signature` (big-endian in the file).
    pub length: Option<u32>,
    /// `id_type`: `PKCS#7` (2) is the only kind the kernel accepts.
    pub id_type: Option<String>,
    /// Who signed it (`ISSUER, serial HEX`), when the CMS message names the
    /// certificate by issuer and serial number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// The digest algorithm (`sha256`, `sha512`), when the CMS message is readable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

/// One disassembled instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instruction {
    /// Offset in the section.
    pub offset: u64,
    /// The instruction bytes in hex.
    pub bytes: String,
    /// Intel syntax.
    pub text: String,
    /// Relocations inside the instruction, one line each.
    pub relocations: Vec<String>,
}

/// The disassembly of one replacement function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disassembly {
    /// The replacement symbol (`NEW_SYMBOL`).
    pub symbol: String,
    /// The function it replaces, as `OBJ NAME,POS`.
    pub replaces: String,
    /// Its section.
    pub section: String,
    /// Start offset in the section.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// Always `intel`.
    pub syntax: &'static str,
    /// The instructions.
    pub instructions: Vec<Instruction>,
}

/// Everything `kpbuild inspect` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The file as named on the command line.
    pub file: String,
    /// Object or module.
    pub kind: Kind,
    /// Whether `.kpbuild.functions` is present.
    pub functions_section: bool,
    /// The patched functions from `.kpbuild.functions`.
    pub functions: Vec<Function>,
    /// Without `.kpbuild.functions`: the defined global functions.
    pub global_functions: Vec<GlobalFunction>,
    /// Livepatch callbacks from `.kpbuild.callback_list`.
    pub callbacks: Vec<Callback>,
    /// Every entry of every livepatch relocation section.
    pub livepatch_relocations: Vec<KlpRelocation>,
    /// Undefined ordinary symbols: resolved by the module loader.
    pub loader_symbols: Vec<LoaderSymbol>,
    /// What the kernel would reject or get wrong.
    pub problems: Vec<String>,
    /// A module's `.modinfo`.
    pub modinfo: Option<Modinfo>,
    /// A module's appended signature.
    pub signature: Option<Signature>,
    /// With `--disasm`: the replacement functions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disassembly: Option<Vec<Disassembly>>,
}

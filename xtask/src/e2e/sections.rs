//! The section audit of Debian's production config: every section has a rule.

use super::debian::debian_build;
use super::{Ctx, PROC_CMDLINE_STRING, read_file};

/// A fixed sample of units of Debian's config, compiled with per-function
/// sections as kpbuild compiles them.
const SECTION_SAMPLE: &[&str] = &[
    "fs/proc/meminfo.o",
    "fs/proc/cmdline.o",
    "kernel/sys.o",
    "kernel/fork.o",
    "kernel/sched/core.o",
    "mm/page_alloc.o",
    "net/ipv4/tcp_input.o",
    "fs/namei.o",
    "arch/x86/kernel/process.o",
];

/// Every section the objects of Debian's production config carry has a rule
/// in elfdiff (per function, per symbol, per special-section entry, ignored,
/// init) or is compared whole and refused by name if it differs: none is
/// dropped silently; every allocated one, by name pattern and rule, is in
/// the reviewed list [`REVIEWED`]. The livepatch module's `.BTF` is reported.
pub(super) fn debian_config_sections_are_covered(ctx: &Ctx) -> Result<(), String> {
    let release = crate::debian_release()?;
    use elfdiff::special::{SectionRule, rule};
    use object::elf;
    use object::read::elf::{ElfFile64, FileHeader as _, SectionHeader as _, Sym as _};
    use std::collections::BTreeMap;

    // The cmdline patch once: prepares the Debian build directory and gives
    // a module to check.
    let build = || {
        let (code, result, ko) = debian_build(
            ctx,
            &release,
            "kpb_deb_sections",
            PROC_CMDLINE_STRING.patches,
        );
        result
            .map(|_| ko)
            .map_err(|why| format!("kpbuild build --debian exited {code}: {why}"))
    };
    let kernel = kpbuild::debian::fetch(&release, &|_| {}).map_err(|e| e.to_string())?;
    let (prepared, cc) =
        kpbuild::treeless::prepared_dir(&kernel.src, &kernel.config).map_err(|e| e.to_string())?;
    let mut ko = None;
    if !prepared.join(".kpbuild-prepared").exists() {
        ko = Some(build()?);
    }
    // A scratch copy: objects built with other flags stay out of the shared
    // directory.
    let scratch = ctx.work.join("debian-sections-build");
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    }
    std::fs::create_dir_all(&ctx.work).map_err(|e| format!("{}: {e}", ctx.work.display()))?;
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(&prepared)
        .arg(&scratch)
        .status()
        .map_err(|e| format!("cp: {e}"))?;
    if !status.success() {
        return Err(format!("cp -a {} failed", prepared.display()));
    }
    for unit in SECTION_SAMPLE {
        let _ = std::fs::remove_file(scratch.join(unit));
    }
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    let out = std::process::Command::new("make")
        .arg("-C")
        .arg(&kernel.src)
        .arg(format!("O={}", scratch.display()))
        .arg(format!("CC={cc}"))
        .arg("KCFLAGS=-ffunction-sections -fdata-sections")
        .arg(format!("-j{jobs}"))
        .arg("-s")
        .args(SECTION_SAMPLE)
        .output()
        .map_err(|e| format!("make: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "make {SECTION_SAMPLE:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }

    // Section names are grouped: per-function and per-variable sections
    // (`.text.foo`, `.data.bar`) count under their prefix.
    let group = |name: &str| -> String {
        for prefix in [
            ".text.unlikely.",
            ".text.hot.",
            ".text.",
            ".data.rel.ro.",
            ".data.once.",
            ".data.read_mostly.",
            ".data.",
            ".rodata.str",
            ".rodata.",
            ".bss.",
            ".rela.text.",
            ".rela.data.",
            ".rela.rodata.",
            ".init.text.",
            ".init.data.",
            ".init.rodata.",
            ".exit.text.",
            ".ref.text.",
            ".sched.text.",
            ".noinstr.text.",
            ".cpuidle.text.",
            ".debug_",
        ] {
            if let Some(rest) = name.strip_prefix(prefix)
                && !rest.is_empty()
            {
                return format!("{prefix}*");
            }
        }
        name.to_string()
    };
    // (group, rule) → units.
    let mut table: BTreeMap<(String, String), std::collections::BTreeSet<&str>> = BTreeMap::new();
    let mut whole = std::collections::BTreeSet::new();
    // The same, for the sections loaded with the module: the reviewed list.
    let mut allocated: BTreeMap<(String, String), std::collections::BTreeSet<&str>> =
        BTreeMap::new();
    for unit in SECTION_SAMPLE {
        let path = scratch.join(unit);
        let data = read_file(&path)?;
        let file = ElfFile64::<object::Endianness>::parse(data.as_slice())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let endian = file.endian();
        let header = file.elf_header();
        let sections = header
            .sections(endian, data.as_slice())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let symbols = sections
            .symbols(endian, data.as_slice(), elf::SHT_SYMTAB)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        // Named function and object symbols per section index (what
        // elfdiff's `symbols_in` holds).
        let mut with_symbols = std::collections::HashSet::new();
        for (i, sym) in symbols.iter().enumerate() {
            let kind = sym.st_type();
            if (kind == elf::STT_FUNC || kind == elf::STT_OBJECT || kind == elf::STT_NOTYPE)
                && sym
                    .name(endian, symbols.strings())
                    .is_ok_and(|n| !n.is_empty())
                && let Ok(Some(index)) = symbols.symbol_section(endian, sym, object::SymbolIndex(i))
            {
                with_symbols.insert(index.0);
            }
        }
        for (index, section) in sections.iter().enumerate() {
            if index == 0 {
                continue;
            }
            let name = String::from_utf8_lossy(
                sections
                    .section_name(endian, section)
                    .map_err(|e| format!("{}: {e}", path.display()))?,
            )
            .into_owned();
            let flags = section.sh_flags(endian).0;
            let kind = section.sh_type(endian);
            let merge = flags & elf::SHF_MERGE.0 != 0;
            let r = if kind == elf::SHT_RELA {
                SectionRule::Ignored
            } else {
                rule(&name, flags, with_symbols.contains(&index), merge)
            };
            let alloc = flags & elf::SHF_ALLOC.0 != 0;
            if alloc && kind == elf::SHT_RELA {
                return Err(format!("{unit}: allocated relocation section {name}"));
            }
            let label = match r {
                SectionRule::Special(s) => format!("Special({})", s.name),
                SectionRule::Ignored if alloc => "Ignored".into(),
                SectionRule::Ignored => "Ignored (not loaded)".into(),
                SectionRule::ComparedWhole => {
                    whole.insert(group(&name));
                    "ComparedWhole".into()
                }
                other => format!("{other:?}"),
            };
            if alloc {
                allocated
                    .entry((group(&name), label.clone()))
                    .or_default()
                    .insert(unit);
            }
            table.entry((group(&name), label)).or_default().insert(unit);
        }
    }
    eprintln!("  > {:<34} {:<34} units", "section", "rule");
    for ((name, label), units) in &table {
        eprintln!("  > {name:<34} {label:<34} {}", units.len());
    }
    eprintln!(
        "  > compared whole, refused by name if a patch changes them: {}",
        whole.into_iter().collect::<Vec<_>>().join(" ")
    );
    // Every section got a rule above: `rule` is total, and its only
    // catch-all for allocated sections is ComparedWhole, which refuses.
    // Each allocated one's rule was also reviewed by a person.
    let reviewed = check_reviewed(&allocated);
    let _ = std::fs::remove_dir_all(&scratch);
    let ko = match ko {
        Some(ko) => ko,
        None => build()?,
    };
    let ko_data = read_file(&ko)?;
    let module = ElfFile64::<object::Endianness>::parse(ko_data.as_slice())
        .map_err(|e| format!("{}: {e}", ko.display()))?;
    let endian = module.endian();
    let sections = module
        .elf_header()
        .sections(endian, ko_data.as_slice())
        .map_err(|e| format!("{}: {e}", ko.display()))?;
    let btf: Vec<String> = sections
        .iter()
        .filter_map(|s| sections.section_name(endian, s).ok())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .filter(|n| n.starts_with(".BTF"))
        .collect();
    eprintln!(
        "  > {}: {}",
        ko.display(),
        if btf.is_empty() {
            "no .BTF section".to_string()
        } else {
            format!("carries {}", btf.join(" "))
        }
    );
    reviewed
}

/// The reviewed list: each allocated section name pattern of the sample,
/// with the rule elfdiff gives it.
const REVIEWED: &str = "fixtures/kernel/debian-sections.txt";

/// Every allocated (pattern, rule) of `seen` is in [`REVIEWED`]: a new
/// section, or a known one whose rule changed, fails until a person has
/// reviewed its rule and added the line (printed in the list's format).
fn check_reviewed(
    seen: &std::collections::BTreeMap<(String, String), std::collections::BTreeSet<&str>>,
) -> Result<(), String> {
    let path = crate::repo_root().join(REVIEWED);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let reviewed: std::collections::BTreeSet<(String, String)> = text
        .lines()
        .filter_map(|l| l.split('#').next())
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (pattern, rule) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
            (pattern.to_string(), rule.trim().to_string())
        })
        .collect();
    for (pattern, rule) in reviewed.iter().filter(|k| !seen.contains_key(*k)) {
        eprintln!("  > reviewed, not in this sample: {pattern} {rule}");
    }
    let new: Vec<String> = seen
        .iter()
        .filter(|(k, _)| !reviewed.contains(*k))
        .map(|((pattern, rule), units)| {
            let units: Vec<&str> = units.iter().copied().collect();
            format!("{pattern:<34} {rule:<34} # {}", units.join(" "))
        })
        .collect();
    if new.is_empty() {
        return Ok(());
    }
    Err(format!(
        "allocated sections without a reviewed rule in {REVIEWED}; review each rule, then add its line:\n{}",
        new.join("\n")
    ))
}

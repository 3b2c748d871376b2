//! `bench prematch`: every function of every C unit of the test kernel,
//! compiled as kpbuild compiles originals, compared with vmlinux: how many
//! are equal, how many are not compared and why, and every mismatch.

use super::{load_average, print_load, write_json};
use crate::{kernel, scale};
use serde_json::json;
use std::time::Instant;

pub(super) fn bench_prematch() -> Result<(), String> {
    let kb = kernel()?;
    let load = load_average();
    let out = kb.build.with_file_name("fp-objects");
    let (pairs, reused) = super::diff::obtain_pairs(&kb, &out)?;
    let start = Instant::now();
    let survey = scale::prematch_all(&kb.vmlinux(), &pairs)?;
    let wall = start.elapsed().as_secs_f64();
    let skipped: usize = survey.skipped.values().sum();
    let value = json!({
        "kernel": kb.build,
        "units": survey.units,
        "objects_reused": reused,
        "functions_equal": survey.equal,
        "functions_skipped": survey.skipped,
        "mismatches": survey.mismatches,
        "wall_s": wall,
    });
    let path = write_json("prematch", &value)?;
    println!(
        "bench prematch: {} units of {}",
        survey.units,
        kb.build.display()
    );
    println!("  functions equal to vmlinux's  {}", survey.equal);
    println!("  not compared                  {skipped}");
    for (why, n) in &survey.skipped {
        println!("    {n:>6}  {why}");
    }
    println!(
        "  mismatches                    {}",
        survey.mismatches.len()
    );
    for m in &survey.mismatches {
        println!("    {m}");
    }
    println!("  wall time                     {wall:.2} s");
    print_load(load);
    println!("  wrote {}", path.display());
    Ok(())
}

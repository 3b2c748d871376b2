//! `kpbuild farm plan --ci gitlab|github`: the farm as a pipeline of the CI
//! engine a project already runs. One job per target (GitLab's
//! `parallel:matrix`, GitHub's `strategy.matrix`) builds and tests without
//! the signing key (`farm run --only TARGET --artifact DIR`), with the
//! kernel cache kept per kernel release; one final job, the only one that
//! holds the key, checks every artifact and publishes the bundles
//! (`farm publish --artifacts`). It runs when a target job failed too, so
//! one failing target never holds back the others' bundles, and fails then.
//!
//! The matrix is the targets file expanded now (sets of Debian kernels
//! through apt): plan again when apt knows new kernels. Paths are written
//! as given, relative to the checkout the pipeline runs in.

use super::FarmError;
use super::series::Series;
use super::targets::{Kernel, Target, Targets};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// The CI engine a plan is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Ci {
    /// A `.gitlab-ci.yml`.
    Gitlab,
    /// A GitHub Actions workflow (`.github/workflows/kpbuild-farm.yml`).
    Github,
}

/// `kpbuild farm plan`.
#[derive(Debug, Clone)]
pub struct PlanRequest {
    /// The targets file, as the pipeline names it.
    pub targets: PathBuf,
    /// The fix series, as the pipeline names it.
    pub series: PathBuf,
    /// The engine.
    pub ci: Ci,
    /// The public key the publish job checks the repository and key with.
    pub pubkey: PathBuf,
    /// The channel published to.
    pub channel: String,
    /// The livepatch module's name.
    pub name: String,
    /// A shell command run first in every job (installs kpbuild), if any.
    pub setup: Option<String>,
}

/// One job of the matrix.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlanTarget {
    /// The target's name (`--only`).
    pub name: String,
    /// Its kernel cache key: the Debian release, or `tree-NAME`.
    pub cache_key: String,
}

/// A pipeline.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    /// The engine.
    pub ci: &'static str,
    /// Its target jobs.
    pub targets: Vec<PlanTarget>,
    /// The pipeline file's text.
    pub text: String,
}

/// Reads and checks the targets file and the series, and writes the
/// pipeline.
pub fn plan(req: &PlanRequest) -> Result<Plan, FarmError> {
    Series::read(&req.series)?;
    let targets = Targets::read(&req.targets)?.expand()?;
    bundle::repo::channel_dir(Path::new("."), &req.channel).map_err(|source| {
        FarmError::Publish(Box::new(super::publish::PublishError::Repo {
            dir: req.channel.clone().into(),
            source,
        }))
    })?;
    crate::module::validate_module_name(&super::run::module_name(&req.name, &"0".repeat(64)))
        .map_err(|e| FarmError::Name(Box::new(e)))?;
    let jobs: Vec<PlanTarget> = targets.iter().map(plan_target).collect();
    let (ci, text) = match req.ci {
        Ci::Gitlab => ("gitlab", gitlab(req, &jobs)),
        Ci::Github => ("github", github(req, &jobs)),
    };
    Ok(Plan {
        ci,
        targets: jobs,
        text,
    })
}

fn plan_target(t: &Target) -> PlanTarget {
    let cache_key = match &t.kernel {
        Kernel::Debian { release, .. } => release.clone(),
        Kernel::Tree { .. } => format!("tree-{}", t.name),
    };
    PlanTarget {
        name: t.name.clone(),
        cache_key,
    }
}

/// A YAML double-quoted scalar.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("a string")
}

/// A POSIX shell single-quoted word.
fn sh(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `--flag 'value'` words of a command line, for paths given to the plan.
fn path_arg(flag: &str, p: &Path) -> String {
    format!("{flag} {}", sh(&p.display().to_string()))
}

const HEADER: &str = "# The kpbuild farm, written by `kpbuild farm plan`: one job per target\n\
# builds and tests its cumulative livepatch module without the signing key;\n\
# the publish job alone holds the key, checks every artifact and publishes\n\
# the signed bundles. It needs two CI variables: KPBUILD_REPO (the\n\
# repository directory published into) and KPBUILD_SIGNING_KEY (the\n\
# unencrypted minisign secret key";

fn run_command(req: &PlanRequest, target: &str, artifact: &str) -> String {
    format!(
        "kpbuild farm run {} {} --name {} --only \"{target}\" --artifact \"{artifact}\"",
        path_arg("--targets", &req.targets),
        path_arg("--series", &req.series),
        sh(&req.name),
    )
}

fn publish_command(req: &PlanRequest, key: &str, artifacts: &str) -> String {
    format!(
        "kpbuild farm publish {} {} --artifacts {artifacts} --repo \"$KPBUILD_REPO\" --key \"{key}\" {} --channel {} --report farm-report",
        path_arg("--targets", &req.targets),
        path_arg("--series", &req.series),
        path_arg("--pubkey", &req.pubkey),
        sh(&req.channel),
    )
}

fn gitlab(req: &PlanRequest, jobs: &[PlanTarget]) -> String {
    let mut y = format!("{HEADER}, a variable of type File).\n\nstages: [farm, publish]\n\n");
    y.push_str("farm:\n  stage: farm\n  variables:\n");
    y.push_str("    KPBUILD_CACHE: \"$CI_PROJECT_DIR/.kpbuild-cache\"\n");
    y.push_str("  parallel:\n    matrix:\n");
    for j in jobs {
        let _ = write!(
            y,
            "      - KPBUILD_TARGET: {}\n        KPBUILD_KERNEL: {}\n",
            quoted(&j.name),
            quoted(&j.cache_key)
        );
    }
    y.push_str("  cache:\n    key: \"kpbuild-kernel-$KPBUILD_KERNEL\"\n");
    y.push_str("    paths: [\".kpbuild-cache/\"]\n  script:\n");
    if let Some(setup) = &req.setup {
        let _ = writeln!(y, "    - {}", quoted(setup));
    }
    let run = run_command(req, "$KPBUILD_TARGET", "farm-artifacts/$KPBUILD_TARGET");
    let _ = writeln!(y, "    - {}", quoted(&run));
    y.push_str("  artifacts:\n    when: always\n");
    y.push_str("    paths: [\"farm-artifacts/$KPBUILD_TARGET/\"]\n\n");
    y.push_str("publish:\n  stage: publish\n  when: always\n  script:\n");
    if let Some(setup) = &req.setup {
        let _ = writeln!(y, "    - {}", quoted(setup));
    }
    y.push_str("    - test -n \"$KPBUILD_REPO\" && test -f \"$KPBUILD_SIGNING_KEY\"\n");
    let publish = publish_command(req, "$KPBUILD_SIGNING_KEY", "farm-artifacts/*");
    let _ = writeln!(y, "    - {}", quoted(&publish));
    y.push_str("  artifacts:\n    when: always\n    paths: [\"farm-report/\"]\n");
    y
}

fn github(req: &PlanRequest, jobs: &[PlanTarget]) -> String {
    let mut y = format!(
        "{HEADER}, a secret). KPBUILD_REPO is a repository variable.\n\n\
         name: kpbuild farm\n\non:\n  workflow_dispatch:\n\n\
         permissions:\n  contents: read\n\njobs:\n"
    );
    y.push_str("  farm:\n    runs-on: ubuntu-latest\n    strategy:\n      fail-fast: false\n");
    y.push_str("      matrix:\n        include:\n");
    for j in jobs {
        let _ = write!(
            y,
            "          - target: {}\n            kernel: {}\n",
            quoted(&j.name),
            quoted(&j.cache_key)
        );
    }
    y.push_str("    env:\n      KPBUILD_CACHE: ${{ github.workspace }}/.kpbuild-cache\n");
    y.push_str("    steps:\n      - uses: actions/checkout@v4\n      - uses: actions/cache@v4\n");
    y.push_str("        with:\n          path: .kpbuild-cache\n");
    y.push_str("          key: kpbuild-kernel-${{ matrix.kernel }}\n");
    if let Some(setup) = &req.setup {
        let _ = writeln!(
            y,
            "      - name: Set up kpbuild\n        run: {}",
            quoted(setup)
        );
    }
    let run = run_command(req, "$TARGET", "farm-artifacts/$TARGET");
    let _ = writeln!(
        y,
        "      - name: Build and test\n        env:\n          TARGET: ${{{{ matrix.target }}}}\n        run: {}",
        quoted(&run)
    );
    y.push_str("      - uses: actions/upload-artifact@v4\n        if: always()\n        with:\n");
    y.push_str("          name: farm-${{ matrix.target }}\n");
    y.push_str("          path: farm-artifacts/${{ matrix.target }}\n\n");
    y.push_str("  publish:\n    needs: farm\n    if: always()\n    runs-on: ubuntu-latest\n");
    y.push_str("    steps:\n      - uses: actions/checkout@v4\n");
    y.push_str("      - uses: actions/download-artifact@v4\n        with:\n");
    y.push_str("          pattern: farm-*\n          path: farm-artifacts\n");
    if let Some(setup) = &req.setup {
        let _ = writeln!(
            y,
            "      - name: Set up kpbuild\n        run: {}",
            quoted(setup)
        );
    }
    let publish = publish_command(req, "$RUNNER_TEMP/kpbuild.key", "farm-artifacts/*");
    let _ = write!(
        y,
        "      - name: Publish\n        env:\n\
         \x20         KPBUILD_SIGNING_KEY: ${{{{ secrets.KPBUILD_SIGNING_KEY }}}}\n\
         \x20         KPBUILD_REPO: ${{{{ vars.KPBUILD_REPO }}}}\n\
         \x20       run: |\n\
         \x20         printf '%s\\n' \"$KPBUILD_SIGNING_KEY\" > \"$RUNNER_TEMP/kpbuild.key\"\n\
         \x20         {publish}\n"
    );
    y.push_str("      - uses: actions/upload-artifact@v4\n        if: always()\n        with:\n");
    y.push_str("          name: farm-report\n          path: farm-report\n");
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_and_yaml_scalars_are_quoted() {
        assert_eq!(sh("a b"), "'a b'");
        assert_eq!(sh("it's"), r"'it'\''s'");
        assert_eq!(quoted("a \"b\" $X"), r#""a \"b\" $X""#);
    }
}

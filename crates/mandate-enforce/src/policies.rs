//! Loading the organisation's policies from a directory: every `*.cedar`
//! file (policies) and `*.cedarschema` file (schema fragments declaring
//! actions), in name order. Parsing and validation happen here, at load,
//! never per request.

use std::path::Path;

use mandate_core::{OrgPolicies, PolicyDiagnostic, PolicySource};

/// What was loaded.
#[derive(Debug, Clone)]
pub struct LoadedPolicies {
    pub policies: OrgPolicies,
    pub schema_fragments: Vec<String>,
    pub files: Vec<String>,
}

/// Whether a missing directory is an empty set or an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// At first start: no directory yet means no organisation policies.
    Empty,
    /// On reload: a directory that vanished (renamed, unmounted) must not
    /// silently drop every boundary.
    Error,
}

/// Loads and validates `dir`. Every problem is reported: unreadable
/// entries, policy files that are not regular readable files (a dangling
/// symlink, say), parse and validation errors.
pub fn load_dir(dir: &Path, missing: Missing) -> Result<LoadedPolicies, Vec<PolicyDiagnostic>> {
    let (schemas, policies) = read_dir(dir, missing)?;
    load(schemas, policies)
}

/// Loads and validates one policy file as if it were the only `*.cedar`
/// file of a policy directory: with the schema fragments (`*.cedarschema`)
/// of `schema_dir`.
pub fn load_file(file: &Path, schema_dir: &Path) -> Result<LoadedPolicies, Vec<PolicyDiagnostic>> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let text = std::fs::read_to_string(file).map_err(|e| {
        vec![PolicyDiagnostic {
            source: name.clone(),
            line: 1,
            col: 1,
            message: format!("cannot read `{}`: {e}", file.display()),
        }]
    })?;
    let (schemas, _) = read_dir(schema_dir, Missing::Error)?;
    load(schemas, vec![PolicySource { name, text }])
}

fn load(
    schemas: Vec<PolicySource>,
    policies: Vec<PolicySource>,
) -> Result<LoadedPolicies, Vec<PolicyDiagnostic>> {
    let loaded = OrgPolicies::load(&schemas, &policies)?;
    Ok(LoadedPolicies {
        policies: loaded,
        schema_fragments: schemas.into_iter().map(|s| s.name).collect(),
        files: policies.into_iter().map(|s| s.name).collect(),
    })
}

/// The schema fragments and the policy files of `dir`, in name order.
fn read_dir(
    dir: &Path,
    missing: Missing,
) -> Result<(Vec<PolicySource>, Vec<PolicySource>), Vec<PolicyDiagnostic>> {
    let diag = |source: &str, message: String| PolicyDiagnostic {
        source: source.to_owned(),
        line: 1,
        col: 1,
        message,
    };
    let dir_name = dir.display().to_string();
    let (mut schemas, mut policies) = (Vec::new(), Vec::new());
    let mut problems = Vec::new();
    match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && missing == Missing::Empty => {}
        Err(e) => {
            return Err(vec![diag(
                &dir_name,
                format!("cannot read the policy directory: {e}"),
            )]);
        }
        Ok(entries) => {
            let mut paths = Vec::new();
            for entry in entries {
                match entry {
                    Ok(e) => paths.push(e.path()),
                    Err(e) => problems.push(diag(
                        &dir_name,
                        format!("cannot read a directory entry: {e}"),
                    )),
                }
            }
            paths.sort();
            for path in paths {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let target = match path.extension().and_then(|e| e.to_str()) {
                    Some("cedar") => &mut policies,
                    Some("cedarschema") => &mut schemas,
                    _ => continue,
                };
                // Follows symlinks: a link to nowhere is an error, not a skip.
                match std::fs::read_to_string(&path) {
                    Ok(text) => target.push(PolicySource { name, text }),
                    Err(e) => problems.push(diag(&name, format!("cannot read `{name}`: {e}"))),
                }
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok((schemas, policies))
}

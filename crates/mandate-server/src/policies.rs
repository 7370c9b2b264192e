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

/// Loads and validates `dir`. A missing directory is an empty policy set
/// (the base schema only); an unreadable file or an invalid policy is an
/// error, with every problem reported.
pub fn load_dir(dir: &Path) -> Result<LoadedPolicies, Vec<PolicyDiagnostic>> {
    let fail = |message: String| {
        vec![PolicyDiagnostic {
            source: dir.display().to_string(),
            line: 1,
            col: 1,
            message,
        }]
    };
    let (mut schemas, mut policies) = (Vec::new(), Vec::new());
    if dir.exists() {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| fail(format!("cannot read the policy directory: {e}")))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        entries.sort();
        for path in entries {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let target = match path.extension().and_then(|e| e.to_str()) {
                Some("cedar") => &mut policies,
                Some("cedarschema") => &mut schemas,
                _ => continue,
            };
            let text = std::fs::read_to_string(&path)
                .map_err(|e| fail(format!("cannot read `{name}`: {e}")))?;
            target.push(PolicySource { name, text });
        }
    }
    let loaded = OrgPolicies::load(&schemas, &policies)?;
    Ok(LoadedPolicies {
        policies: loaded,
        schema_fragments: schemas.into_iter().map(|s| s.name).collect(),
        files: policies.into_iter().map(|s| s.name).collect(),
    })
}

//! Policy sources, kinds and validation.
//!
//! Three kinds of policy in one language, told apart by `@kind`:
//!
//! | kind | Cedar effect | default for | on a match |
//! |---|---|---|---|
//! | `boundary` | `forbid` | every `forbid` | Deny; nothing overrides it |
//! | `escalate` | `permit` | a mission's `escalations` | Escalate, unless a live grant covers the request |
//! | `scope` | `permit` | every other `permit` | Allow |
//!
//! Grants (created by approvals) are `permit` policies of their own kind.
//! Every policy gets a stable id: `{source}/{@id}` or `{source}/{index}`.

use std::collections::HashMap;
use std::str::FromStr as _;

use cedar_policy::{
    Effect, Policy, PolicyId, PolicySet, Schema, SchemaFragment, ValidationMode, Validator,
};

use crate::error::InputError;
use crate::mission::MissionPolicies;

/// Mandate's base schema (entity types, generic actions). Organisations add
/// actions in `*.cedarschema` files beside their policies.
pub const BASE_SCHEMA: &str = include_str!("../schema/mandate.cedarschema");

/// Largest Cedar text of one source (a file, or one kind of a mission).
pub(crate) const MAX_POLICY_BYTES: usize = 16 * 1024;
/// Deepest bracket nesting / longest unary run accepted. The Cedar parser
/// recurses on nesting without a limit, so unbounded input could exhaust
/// the stack of the thread that parses it.
const MAX_POLICY_NESTING: usize = 16;

/// What a policy does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PolicyKind {
    Boundary,
    Escalate,
    Scope,
    Grant,
}

impl PolicyKind {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Boundary => "boundary",
            Self::Escalate => "escalate",
            Self::Scope => "scope",
            Self::Grant => "grant",
        }
    }
}

/// A named piece of Cedar text: a file, or one kind of a mission's policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySource {
    /// Where it came from, e.g. `hr.cedar` or `msn_…/scope`. Becomes the
    /// prefix of its policies' ids.
    pub name: String,
    pub text: String,
}

/// A problem in a policy or schema source, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDiagnostic {
    pub source: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl std::fmt::Display for PolicyDiagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.source, self.line, self.col, self.message
        )
    }
}

/// A compiled set of policies with each one's kind.
#[derive(Debug, Clone, Default)]
pub struct KindedSet {
    pub(crate) set: PolicySet,
    pub(crate) kinds: HashMap<PolicyId, PolicyKind>,
    /// What escalate policies say about their approval (absent: defaults).
    pub(crate) escalations: HashMap<PolicyId, EscalationTerms>,
}

/// What an escalate policy says about the approval it asks for, from its
/// annotations: `@approvers("alice, bob")` names who may approve (default:
/// the mission's principal) and `@trust("approved")` demands that every
/// matching call be approved on its own (a step-up: grants for the rest of
/// the mission or for a pattern do not cover it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EscalationTerms {
    pub approvers: Vec<String>,
    pub step_up: bool,
}

impl KindedSet {
    /// Number of policies.
    #[must_use]
    pub fn len(&self) -> usize {
        self.kinds.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    /// The policy ids and their kinds, sorted by id.
    #[must_use]
    pub fn ids(&self) -> Vec<(String, PolicyKind)> {
        let mut v: Vec<_> = self
            .kinds
            .iter()
            .map(|(id, k)| (id.to_string(), *k))
            .collect();
        v.sort();
        v
    }

    /// Every approver an escalate policy names (`@approvers`), with the ids
    /// of the policies that name it, sorted.
    #[must_use]
    pub fn named_approvers(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        let mut out: std::collections::BTreeMap<String, Vec<String>> =
            std::collections::BTreeMap::new();
        for (id, terms) in &self.escalations {
            for a in &terms.approvers {
                out.entry(a.clone()).or_default().push(id.to_string());
            }
        }
        for ids in out.values_mut() {
            ids.sort();
        }
        out
    }

    /// The compiled policies, for benchmarks that compare with bare Cedar.
    #[doc(hidden)]
    pub fn cedar_policies(&self) -> impl Iterator<Item = &cedar_policy::Policy> {
        self.set.policies()
    }

    pub(crate) fn kind(&self, id: &PolicyId) -> Option<PolicyKind> {
        self.kinds.get(id).copied()
    }

    /// The subset whose answer may depend on the principal: a principal
    /// constraint in the scope, or the `principal` variable anywhere in a
    /// condition (read from the policy's JSON form). A policy that cannot
    /// be read that way counts as dependent.
    fn principal_dependent(&self) -> Result<Self, PolicyDiagnostic> {
        fn mentions_principal(v: &serde_json::Value) -> bool {
            match v {
                serde_json::Value::Object(o) => o.iter().any(|(k, v)| {
                    (k == "Var" && v.as_str() == Some("principal")) || mentions_principal(v)
                }),
                serde_json::Value::Array(a) => a.iter().any(mentions_principal),
                _ => false,
            }
        }
        let mut out = Self::default();
        for p in self.set.policies() {
            let dependent = !matches!(
                p.principal_constraint(),
                cedar_policy::PrincipalConstraint::Any
            ) || p.to_json().map_or(true, |j| {
                j.get("conditions").is_some_and(mentions_principal)
            });
            if !dependent {
                continue;
            }
            let id = p.id().clone();
            out.set.add(p.clone()).map_err(|e| PolicyDiagnostic {
                source: "policies".into(),
                line: 1,
                col: 1,
                message: e.to_string(),
            })?;
            if let Some(k) = self.kinds.get(&id) {
                out.kinds.insert(id.clone(), *k);
            }
            if let Some(t) = self.escalations.get(&id) {
                out.escalations.insert(id, t.clone());
            }
        }
        Ok(out)
    }

    /// Parses `source` into this set. `default` is the kind of policies
    /// without a `@kind`; `required` (if given) is the only kind allowed.
    fn add_source(
        &mut self,
        source: &PolicySource,
        default: fn(Effect) -> PolicyKind,
        required: Option<PolicyKind>,
    ) -> Result<(), PolicyDiagnostic> {
        let diag = |line, col, message: String| PolicyDiagnostic {
            source: source.name.clone(),
            line,
            col,
            message,
        };
        if source.text.len() > MAX_POLICY_BYTES {
            return Err(diag(1, 1, format!("longer than {MAX_POLICY_BYTES} bytes")));
        }
        check_nesting(&source.text).map_err(|(line, col, m)| diag(line, col, m))?;
        let parsed = PolicySet::from_str(&source.text).map_err(|e| {
            let (line, col) = first_label(&source.text, &e);
            diag(line, col, e.to_string())
        })?;
        if parsed.templates().next().is_some() {
            return Err(diag(1, 1, "templates are not supported".into()));
        }
        // `from_str` numbers policies policy0, policy1, … in source order.
        let mut policies: Vec<&Policy> = parsed.policies().collect();
        policies.sort_by_key(|p| {
            p.id()
                .to_string()
                .trim_start_matches("policy")
                .parse::<usize>()
                .unwrap_or(0)
        });
        let starts = policy_starts(&source.text);
        for (index, p) in policies.into_iter().enumerate() {
            let (line, col) = starts
                .get(index)
                .map_or((1, 1), |&o| line_col(&source.text, o));
            let local = p
                .annotation("id")
                .map_or_else(|| index.to_string(), str::to_owned);
            if local.is_empty() || local.contains(char::is_whitespace) {
                return Err(diag(
                    line,
                    col,
                    format!("`@id(\"{local}\")` must be a non-empty word"),
                ));
            }
            let id = PolicyId::new(format!("{}/{local}", source.name));
            let kind = match p.annotation("kind") {
                None => default(p.effect()),
                Some("boundary") => PolicyKind::Boundary,
                Some("escalate") => PolicyKind::Escalate,
                Some("scope") => PolicyKind::Scope,
                Some(other) => {
                    return Err(diag(
                        line,
                        col,
                        format!("unknown `@kind(\"{other}\")` (boundary, escalate or scope)"),
                    ));
                }
            };
            let want_effect = match kind {
                PolicyKind::Boundary => Effect::Forbid,
                PolicyKind::Escalate | PolicyKind::Scope | PolicyKind::Grant => Effect::Permit,
            };
            if p.effect() != want_effect {
                return Err(diag(
                    line,
                    col,
                    format!(
                        "a {} policy must be a `{}`",
                        kind.as_str(),
                        effect_word(want_effect)
                    ),
                ));
            }
            if let Some(req) = required
                && req != kind
            {
                return Err(diag(
                    line,
                    col,
                    format!(
                        "only {} policies belong here, not {}",
                        req.as_str(),
                        kind.as_str()
                    ),
                ));
            }
            if self.kinds.contains_key(&id) {
                return Err(diag(line, col, format!("duplicate policy id `{id}`")));
            }
            let terms = escalation_terms(p, kind).map_err(|m| diag(line, col, m))?;
            self.set
                .add(p.new_id(id.clone()))
                .map_err(|e| diag(line, col, e.to_string()))?;
            if let Some(t) = terms {
                self.escalations.insert(id.clone(), t);
            }
            self.kinds.insert(id, kind);
        }
        Ok(())
    }
}

/// Reads `@approvers` and `@trust`, which only escalate policies may carry.
fn escalation_terms(p: &Policy, kind: PolicyKind) -> Result<Option<EscalationTerms>, String> {
    let approvers = p.annotation("approvers");
    let trust = p.annotation("trust");
    if approvers.is_none() && trust.is_none() {
        return Ok(None);
    }
    if kind != PolicyKind::Escalate {
        return Err("`@approvers` and `@trust` belong on escalate policies only".into());
    }
    let step_up = match trust {
        None => false,
        Some("approved") => true,
        Some(other) => {
            return Err(format!(
                "unknown `@trust(\"{other}\")` (only \"approved\": every call approved on its own)"
            ));
        }
    };
    let mut names = Vec::new();
    for name in approvers.unwrap_or_default().split(',').map(str::trim) {
        if name.is_empty() {
            continue;
        }
        crate::ids::PrincipalName::try_from(name.to_owned())
            .map_err(|e| format!("`@approvers`: {e}"))?;
        names.push(name.to_owned());
    }
    if approvers.is_some() && names.is_empty() {
        return Err("`@approvers` names no principal".into());
    }
    names.sort();
    names.dedup();
    Ok(Some(EscalationTerms {
        approvers: names,
        step_up,
    }))
}

fn effect_word(e: Effect) -> &'static str {
    match e {
        Effect::Permit => "permit",
        Effect::Forbid => "forbid",
    }
}

fn default_kind(e: Effect) -> PolicyKind {
    match e {
        Effect::Forbid => PolicyKind::Boundary,
        Effect::Permit => PolicyKind::Scope,
    }
}

fn escalate_kind(_: Effect) -> PolicyKind {
    PolicyKind::Escalate
}

fn grant_kind(_: Effect) -> PolicyKind {
    PolicyKind::Grant
}

/// Builds the schema from the base and the organisation's fragments.
pub fn build_schema(fragments: &[PolicySource]) -> Result<Schema, PolicyDiagnostic> {
    let mut all = Vec::with_capacity(fragments.len() + 1);
    let base = PolicySource {
        name: "mandate.cedarschema".into(),
        text: BASE_SCHEMA.into(),
    };
    for src in std::iter::once(&base).chain(fragments) {
        let (frag, _warnings) = SchemaFragment::from_cedarschema_str(&src.text).map_err(|e| {
            let (line, col) = first_label(&src.text, &e);
            PolicyDiagnostic {
                source: src.name.clone(),
                line,
                col,
                message: e.to_string(),
            }
        })?;
        all.push(frag);
    }
    Schema::from_schema_fragments(all).map_err(|e| PolicyDiagnostic {
        source: "schema".into(),
        line: 1,
        col: 1,
        message: e.to_string(),
    })
}

/// Validates `set` against `schema` (strict mode), reporting positions in
/// the sources the policies came from.
fn validate(
    set: &KindedSet,
    schema: &Schema,
    sources: &[&PolicySource],
) -> Result<(), Vec<PolicyDiagnostic>> {
    let result = Validator::new(schema.clone()).validate(&set.set, ValidationMode::Strict);
    if result.validation_passed() {
        return Ok(());
    }
    let diags = result
        .validation_errors()
        .map(|e| {
            let id = e.policy_id().to_string();
            let src = sources
                .iter()
                .find(|s| id.starts_with(&format!("{}/", s.name)));
            let (line, col) = src.map_or((1, 1), |s| first_label(&s.text, e));
            PolicyDiagnostic {
                source: src.map_or_else(|| id.clone(), |s| s.name.clone()),
                line,
                col,
                message: e.to_string(),
            }
        })
        .collect();
    Err(diags)
}

/// The organisation's policies and schema, loaded and validated once.
#[derive(Debug, Clone)]
pub struct OrgPolicies {
    pub(crate) policies: KindedSet,
    /// The policies whose answer may depend on who acts (a principal
    /// constraint, or `principal` in a condition): the ones a delegated
    /// call re-evaluates as each ancestor in its chain. Every other policy
    /// answers the same for every hop, so it is evaluated once.
    pub(crate) per_hop: KindedSet,
    schema: Schema,
    /// The schema's action entities (with their groups, transitively
    /// closed), added to every request so that `action in
    /// Action::"group"`, and a condition on any other action's groups, mean
    /// what they say.
    pub(crate) action_entities: cedar_policy::Entities,
    /// The declared actions by name; any other action is refused.
    pub(crate) actions: std::collections::HashMap<String, crate::decision::ActionShape>,
    /// base64url(SHA-256) of the sources, see [`Self::digest`].
    digest: String,
}

/// base64url(SHA-256) of the JCS form of `{"schemas": [[name, text]…],
/// "policies": [[name, text]…]}`, each list sorted by name.
fn sources_digest(schemas: &[PolicySource], policies: &[PolicySource]) -> String {
    fn sorted(l: &[PolicySource]) -> Vec<(&str, &str)> {
        let mut v: Vec<(&str, &str)> = l
            .iter()
            .map(|s| (s.name.as_str(), s.text.as_str()))
            .collect();
        v.sort_unstable();
        v
    }
    let doc = serde_json::json!({ "schemas": sorted(schemas), "policies": sorted(policies) });
    // A JSON value of strings always canonicalizes.
    crate::b64::s256(&serde_jcs::to_vec(&doc).unwrap_or_default())
}

/// The actions a schema declares, each prepared once for every request
/// that names it. Namespaced actions are refused: requests name actions by
/// their bare name.
type Actions = (
    cedar_policy::Entities,
    std::collections::HashMap<String, crate::decision::ActionShape>,
);

fn actions_of(schema: &Schema) -> Result<Actions, PolicyDiagnostic> {
    let diag = |message: String| PolicyDiagnostic {
        source: "schema".into(),
        line: 1,
        col: 1,
        message,
    };
    // The schema's action entities carry their groups, transitively closed.
    let entities = schema.action_entities().map_err(|e| diag(e.to_string()))?;
    let mut actions = std::collections::HashMap::new();
    for uid in schema.actions() {
        let ty = uid.type_name();
        if !ty.namespace().is_empty() {
            return Err(diag(format!(
                "action `{uid}` is in a namespace; declare actions without one"
            )));
        }
        actions.insert(
            uid.id().unescaped().to_owned(),
            crate::decision::ActionShape::new(schema, uid.clone()),
        );
    }
    Ok((entities, actions))
}

impl OrgPolicies {
    /// Whether the schema declares the action `name`.
    #[must_use]
    pub fn declares_action(&self, name: &str) -> bool {
        self.actions.contains_key(name)
    }

    /// Base schema, no policies.
    pub fn empty() -> Result<Self, PolicyDiagnostic> {
        let schema = build_schema(&[])?;
        let (action_entities, actions) = actions_of(&schema)?;
        Ok(Self {
            policies: KindedSet::default(),
            per_hop: KindedSet::default(),
            schema,
            action_entities,
            actions,
            digest: sources_digest(&[], &[]),
        })
    }

    /// Loads schema fragments and policy files; every problem is reported.
    pub fn load(
        schemas: &[PolicySource],
        policies: &[PolicySource],
    ) -> Result<Self, Vec<PolicyDiagnostic>> {
        let schema = build_schema(schemas).map_err(|d| vec![d])?;
        let mut set = KindedSet::default();
        let mut diags = Vec::new();
        for src in policies {
            if let Err(d) = set.add_source(src, default_kind, None) {
                diags.push(d);
            }
        }
        if !diags.is_empty() {
            return Err(diags);
        }
        let refs: Vec<&PolicySource> = policies.iter().collect();
        validate(&set, &schema, &refs)?;
        let (action_entities, actions) = actions_of(&schema).map_err(|d| vec![d])?;
        let per_hop = set.principal_dependent().map_err(|d| vec![d])?;
        Ok(Self {
            policies: set,
            per_hop,
            schema,
            action_entities,
            actions,
            digest: sources_digest(schemas, policies),
        })
    }

    #[must_use]
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// A digest of the policy and schema files this set was loaded from
    /// (names and texts): two nodes with the same files have the same
    /// digest. Credentials carry it as `policy_s256`.
    #[must_use]
    pub fn digest(&self) -> &str {
        &self.digest
    }

    #[must_use]
    pub fn policies(&self) -> &KindedSet {
        &self.policies
    }
}

/// One mission's policies, compiled once (when the mission is created or
/// first decided on), never per request.
#[derive(Debug, Clone)]
pub struct MissionPolicySet(pub(crate) KindedSet);

impl MissionPolicySet {
    /// Whether any escalation names its approvers (`@approvers`).
    pub(crate) fn names_approvers(&self) -> bool {
        self.0.escalations.values().any(|t| !t.approvers.is_empty())
    }
}

impl MissionPolicySet {
    /// Compiles a mission's three policy texts. `schema`, when given,
    /// validates them (at mission creation); decisions compile without it.
    pub fn compile(
        prefix: &str,
        policies: &MissionPolicies,
        schema: Option<&Schema>,
    ) -> Result<Self, InputError> {
        let sources = [
            (
                PolicySource {
                    name: format!("{prefix}/scope"),
                    text: policies.scope.clone(),
                },
                "scope",
                PolicyKind::Scope,
                default_kind as fn(Effect) -> PolicyKind,
            ),
            (
                PolicySource {
                    name: format!("{prefix}/boundaries"),
                    text: policies.boundaries.clone(),
                },
                "boundaries",
                PolicyKind::Boundary,
                default_kind,
            ),
            (
                PolicySource {
                    name: format!("{prefix}/escalations"),
                    text: policies.escalations.clone(),
                },
                "escalations",
                PolicyKind::Escalate,
                escalate_kind,
            ),
        ];
        let mut set = KindedSet::default();
        for (src, field, required, default) in &sources {
            set.add_source(src, *default, Some(*required))
                .map_err(|d| InputError::BadPolicy {
                    field,
                    message: format!("{}:{}: {}", d.line, d.col, d.message),
                })?;
        }
        if let Some(schema) = schema {
            let refs: Vec<&PolicySource> = sources.iter().map(|(s, ..)| s).collect();
            validate(&set, schema, &refs).map_err(|diags| {
                let d = &diags[0];
                let field = sources
                    .iter()
                    .find(|(s, ..)| s.name == d.source)
                    .map_or("policies", |(_, f, ..)| *f);
                // Cedar names the policy by its id, `{prefix}/{field}/{n}`;
                // at creation the prefix is the id of a mission that will
                // not exist if this fails: the field and policy say where.
                let message = d.message.replace(&format!("`{prefix}/"), "`");
                InputError::BadPolicy {
                    field,
                    message: format!("{}:{}: {message}", d.line, d.col),
                }
            })?;
        }
        Ok(Self(set))
    }

    #[must_use]
    pub fn policies(&self) -> &KindedSet {
        &self.0
    }
}

/// A mission's live grants (accumulated trust), compiled.
#[derive(Debug, Clone, Default)]
pub struct GrantSet(
    pub(crate) KindedSet,
    pub(crate) Vec<crate::grant::ExactGrant>,
    /// Who decided each grant (`grant/{id}` → principal), when known. With
    /// deciders set, a grant covers only escalations its decider was
    /// entitled to approve; a grant missing from the map covers nothing.
    pub(crate) Option<std::collections::HashMap<String, String>>,
);

impl GrantSet {
    /// Compiles grants: each exactly one `permit`, whose id is
    /// `grant/{grant id}` (ids are words: letters, digits, `_`, `-`).
    pub fn compile<'a>(
        grants: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, PolicyDiagnostic> {
        let mut set = KindedSet::default();
        for (id, text) in grants {
            let name = format!("grant/{id}");
            let diag = |message: String| PolicyDiagnostic {
                source: name.clone(),
                line: 1,
                col: 1,
                message,
            };
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(diag(format!("`{id}` is not a valid grant id")));
            }
            let mut one = KindedSet::default();
            let src = PolicySource {
                name: name.clone(),
                text: text.to_owned(),
            };
            // A grant is a grant: no `@kind` may make it count as scope (which
            // would let it allow what the mission says is not negotiable).
            one.add_source(&src, grant_kind, Some(PolicyKind::Grant))?;
            let mut policies = one.set.policies();
            let (Some(policy), None) = (policies.next(), policies.next()) else {
                return Err(diag("a grant must be exactly one `permit` policy".into()));
            };
            let gid = PolicyId::new(&name);
            if set.kinds.contains_key(&gid) {
                return Err(diag(format!("duplicate grant id `{id}`")));
            }
            set.set
                .add(policy.new_id(gid.clone()))
                .map_err(|e| diag(e.to_string()))?;
            set.kinds.insert(gid, PolicyKind::Grant);
        }
        Ok(Self(set, Vec::new(), None))
    }

    /// Adds grants that cover exactly one call each (by request digest).
    #[must_use]
    pub fn with_exact(mut self, exact: Vec<crate::grant::ExactGrant>) -> Self {
        self.1 = exact;
        self
    }

    /// Records who decided each grant, by grant id (without `grant/`).
    #[must_use]
    pub fn with_deciders(mut self, deciders: impl IntoIterator<Item = (String, String)>) -> Self {
        self.2 = Some(
            deciders
                .into_iter()
                .map(|(id, by)| (format!("grant/{id}"), by))
                .collect(),
        );
        self
    }

    /// Whether grant `policy_id` (`grant/{id}`) was decided by one of
    /// `entitled`; always, when deciders are not tracked (offline tools).
    pub(crate) fn decided_by_one_of(
        &self,
        policy_id: &str,
        entitled: &std::collections::BTreeSet<String>,
    ) -> bool {
        match &self.2 {
            None => true,
            Some(m) => m.get(policy_id).is_some_and(|by| entitled.contains(by)),
        }
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty() && self.1.is_empty()
    }
}

/// Refuses bracket nesting deeper than [`MAX_POLICY_NESTING`] and longer
/// runs of unary operators, outside string literals and comments, before
/// the text reaches the recursive parser.
fn check_nesting(text: &str) -> Result<(), (usize, usize, String)> {
    scan(text).map(|_| ())
}

/// Byte offsets where each top-level policy starts (after the previous
/// top-level `;`, skipping blanks and comments).
fn policy_starts(text: &str) -> Vec<usize> {
    scan(text).unwrap_or_default()
}

/// One pass over Cedar text outside string literals and comments: checks
/// nesting and unary runs, and records where each policy starts.
fn scan(text: &str) -> Result<Vec<usize>, (usize, usize, String)> {
    let mut depth = 0usize;
    let mut unary_run = 0usize;
    let mut starts = Vec::new();
    let mut want_start = true;
    let mut chars = text.char_indices().peekable();
    let (mut line, mut col) = (1usize, 0usize);
    while let Some((at, c)) = chars.next() {
        col += 1;
        if want_start
            && !c.is_whitespace()
            && !(c == '/' && chars.peek().is_some_and(|(_, n)| *n == '/'))
        {
            starts.push(at);
            want_start = false;
        }
        match c {
            '\n' => {
                line += 1;
                col = 0;
            }
            '"' => {
                while let Some((_, s)) = chars.next() {
                    col += 1;
                    match s {
                        '\\' => {
                            chars.next();
                            col += 1;
                        }
                        '"' => break,
                        '\n' => {
                            line += 1;
                            col = 0;
                        }
                        _ => {}
                    }
                }
            }
            '/' if chars.peek().is_some_and(|(_, n)| *n == '/') => {
                for (_, s) in chars.by_ref() {
                    if s == '\n' {
                        line += 1;
                        col = 0;
                        break;
                    }
                }
            }
            '(' | '[' | '{' => {
                depth += 1;
                if depth > MAX_POLICY_NESTING {
                    return Err((
                        line,
                        col,
                        format!("nesting deeper than {MAX_POLICY_NESTING} levels is not accepted"),
                    ));
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            ';' if depth == 0 => want_start = true,
            _ => {}
        }
        if c == '!' || c == '-' {
            unary_run += 1;
            if unary_run > MAX_POLICY_NESTING {
                return Err((
                    line,
                    col,
                    format!("more than {MAX_POLICY_NESTING} operators in a row are not accepted"),
                ));
            }
        } else if !c.is_whitespace() {
            unary_run = 0;
        }
    }
    Ok(starts)
}

/// Line and column (1-based) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Position of the first labelled span of a diagnostic.
fn first_label(text: &str, err: &dyn miette::Diagnostic) -> (usize, usize) {
    err.labels()
        .and_then(|mut l| l.next())
        .map_or((1, 1), |l| line_col(text, l.offset()))
}

//! Backstage's entity rules, checked locally with the line and column of every problem.
//!
//! Backstage rejects bad catalog files silently (the entity keeps its last good state and an
//! error sits in its status). These are the rules of `@backstage/catalog-model` that decide
//! that: the envelope (`apiVersion`, `kind`, `metadata`, no foreign root fields), the
//! Kubernetes-style formats of names, namespaces, labels, annotations and tags, the JSON
//! schemas of the built-in kinds (required `spec` fields such as `spec.owner`), and entity
//! references with the default kind of each relation field (an owner defaults to a group).

use super::finding::{Finding, MAX_FINDINGS, cut, excerpt};
use super::refs::{self, EntityRef, RefError};
use super::yaml::{self, Node, Pos, Value};
use sha2::{Digest, Sha256};
use std::path::Path;

/// Files larger than this are refused (Backstage's readers have similar limits; a catalog
/// file this big is a mistake).
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The `apiVersion`s of the built-in kinds.
pub const BUILTIN_API_VERSIONS: [&str; 2] = ["backstage.io/v1alpha1", "backstage.io/v1beta1"];

/// An entity read from a catalog file that passed local validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    /// Its reference.
    pub entity_ref: EntityRef,
    /// `spec.owner` as a full reference, when the kind has one.
    pub owner: Option<EntityRef>,
    /// Where its document starts.
    pub pos: Pos,
    /// The entity as JSON, as Backstage would read it.
    pub json: serde_json::Value,
    /// SHA-256 (hex) of the canonical JSON: tells "changed" from "saved again".
    pub hash: String,
}

/// What one file holds: valid entities and findings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileReport {
    /// Entities without findings.
    pub entities: Vec<Entity>,
    /// Problems, in file order.
    pub findings: Vec<Finding>,
}

/// Reads and validates a file; `display` is the name used in findings.
///
/// Only a regular file is read, and never through a symlink in its last component
/// (`O_NOFOLLOW`): a link to `/dev/zero` read a gigabyte and a FIFO hung forever. The open
/// does not block (`O_NONBLOCK`, for a FIFO or a device), the size is checked on the open
/// file before reading, and the read stops past the cap should the file grow meanwhile.
pub fn check_file(path: &Path, display: &Path) -> FileReport {
    match read_regular(path) {
        Ok(bytes) => check_bytes(&bytes, display),
        Err(ReadError::TooLarge(len)) => too_large(display, len),
        Err(ReadError::NotRegular(what)) => single(
            display,
            1,
            1,
            format!("not read: {what}; only regular files are checked"),
            "not-a-regular-file",
        ),
        Err(ReadError::Io(e)) => single(display, 1, 1, format!("cannot read: {e}"), "io"),
    }
}

/// Why [`read_regular`] read nothing.
#[derive(Debug)]
enum ReadError {
    TooLarge(u64),
    NotRegular(&'static str),
    Io(std::io::Error),
}

fn read_regular(path: &Path) -> Result<Vec<u8>, ReadError> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => ReadError::NotRegular("it is a symbolic link"),
            _ => ReadError::Io(e),
        })?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    let ft = meta.file_type();
    if !ft.is_file() {
        return Err(ReadError::NotRegular(if ft.is_dir() {
            "it is a directory"
        } else if ft.is_fifo() {
            "it is a FIFO"
        } else if ft.is_socket() {
            "it is a socket"
        } else {
            "it is a device"
        }));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(ReadError::TooLarge(meta.len()));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    Ok(bytes)
}

fn too_large(display: &Path, len: u64) -> FileReport {
    single(
        display,
        1,
        1,
        format!(
            "file is {len} bytes; catalog files over {MAX_FILE_BYTES} bytes (1 MiB) are refused"
        ),
        "file-too-large",
    )
}

/// Validates file content already in memory (e.g. read from a git commit).
pub fn check_bytes(bytes: &[u8], display: &Path) -> FileReport {
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return too_large(display, bytes.len() as u64);
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => check_text(text, display),
        Err(e) => {
            let upto = &bytes[..e.valid_up_to()];
            let line = upto.iter().filter(|b| **b == b'\n').count() + 1;
            single(display, line, 1, "file is not UTF-8".into(), "encoding")
        }
    }
}

/// The report of a file whose check itself failed (e.g. the validating task panicked).
pub(crate) fn failed(display: &Path, why: &str) -> FileReport {
    single(
        display,
        1,
        1,
        format!("the check of this file failed (internal error: {why}); please report it"),
        "internal",
    )
}

fn single(display: &Path, line: usize, col: usize, message: String, rule: &str) -> FileReport {
    FileReport {
        entities: Vec::new(),
        findings: vec![Finding {
            file: display.to_path_buf(),
            line,
            col,
            message,
            rule: rule.into(),
        }],
    }
}

/// Validates YAML text.
pub fn check_text(text: &str, display: &Path) -> FileReport {
    // The YAML parser is third-party code fed with arbitrary files: a bug in it must turn
    // into a finding, not take the agent down.
    let Ok(stream) = std::panic::catch_unwind(|| yaml::parse_stream(text)) else {
        return single(
            display,
            1,
            1,
            "the YAML parser failed on this file (internal error); please report it".into(),
            "yaml-syntax",
        );
    };
    let mut sink = Sink::with_room(MAX_FINDINGS);
    for e in &stream.errors {
        sink.push(Finding {
            file: display.to_path_buf(),
            line: e.pos_line,
            col: e.pos_col,
            message: e.message.clone(),
            rule: e.rule.into(),
        });
    }
    sink.more += stream.more_errors;
    let mut entities = Vec::new();
    for doc in &stream.documents {
        let Some(root) = &doc.root else { continue };
        let mut c = Checker {
            file: display,
            sink: &mut sink,
            found: false,
        };
        let entity = c.entity(root, doc.pos);
        // A duplicate key makes Backstage refuse the document that holds it.
        if !c.found && !doc.duplicate_key {
            entities.extend(entity);
        }
    }
    // The parser places nodes and errors found at the end of input on the line after the
    // last one; point them at the end of the file, where an editor can jump.
    let end = yaml::TextEnd::of(text);
    for f in &mut sink.findings {
        (f.line, f.col) = end.clamp(f.line, f.col);
    }
    sink.findings.sort_by_key(|f| (f.line, f.col));
    let at = sink.findings.last().map_or((1, 1), |f| (f.line, f.col));
    FileReport {
        entities,
        findings: sink.finish(display, "findings", at),
    }
}

/// The findings of one file, at most [`MAX_FINDINGS`] kept; the others only counted, so a
/// file with 40,000 broken tags costs 100 findings of memory, not 40,000.
pub(crate) struct Sink {
    findings: Vec<Finding>,
    more: usize,
    room: usize,
}

impl Sink {
    /// A sink that keeps `room` findings: [`MAX_FINDINGS`] for a file's own, what those
    /// leave for findings added later (Backstage's), so the file stays under the cap.
    pub(crate) fn with_room(room: usize) -> Self {
        Self {
            findings: Vec::new(),
            more: 0,
            room,
        }
    }

    /// Keeps `f`, or only counts it once the sink is full.
    pub(crate) fn push(&mut self, f: Finding) {
        if self.findings.len() < self.room {
            self.findings.push(f);
        } else {
            self.more += 1;
        }
    }

    /// The findings kept, then, if any were only counted, one `too-many-findings` finding
    /// in `file` at `at` that says how many `what` ("findings", "findings from Backstage")
    /// were left out.
    pub(crate) fn finish(self, file: &Path, what: &str, at: (usize, usize)) -> Vec<Finding> {
        let Sink {
            findings: mut list,
            more,
            ..
        } = self;
        if more > 0 {
            list.push(Finding {
                file: file.to_path_buf(),
                line: at.0,
                col: at.1,
                message: format!(
                    "{more} more {what} in this file not shown (only the first {MAX_FINDINGS} are kept)"
                ),
                rule: "too-many-findings".into(),
            });
        }
        list
    }
}

/// How a `spec` field is typed.
#[derive(Clone, Copy)]
enum Ty {
    /// A non-empty string (or a `$text`-style placeholder where Backstage allows one).
    Str,
    /// A string or a placeholder object (`{$text: ./openapi.yaml}`).
    StrOrPlaceholder,
    /// A list of strings.
    StrList,
    /// A mapping.
    Object,
    /// One of these strings.
    OneOf(&'static [&'static str]),
}

/// Whether a field holds entity references, and the kind assumed when a reference has none.
#[derive(Clone, Copy)]
enum RefKind {
    /// Not a reference.
    No,
    /// A reference that must name its kind.
    NoDefault,
    /// A reference whose kind defaults to this one.
    Default(&'static str),
}

struct Field {
    name: &'static str,
    ty: Ty,
    required: bool,
    refs: RefKind,
}

const fn f(name: &'static str, ty: Ty, required: bool, refs: RefKind) -> Field {
    Field {
        name,
        ty,
        required,
        refs,
    }
}

use RefKind::{Default as D, No, NoDefault};
use Ty::{Object, OneOf, Str, StrList, StrOrPlaceholder};

/// The `spec` schemas of the built-in kinds (from `@backstage/catalog-model`'s JSON schemas
/// and the relation fields of `BuiltinKindsEntityProcessor`).
fn kind_fields(kind: &str) -> Option<&'static [Field]> {
    static COMPONENT: [Field; 9] = [
        f("type", Str, true, No),
        f("lifecycle", Str, true, No),
        f("owner", Str, true, D("group")),
        f("system", Str, false, D("system")),
        f("subcomponentOf", Str, false, D("component")),
        f("providesApis", StrList, false, D("api")),
        f("consumesApis", StrList, false, D("api")),
        f("dependsOn", StrList, false, NoDefault),
        f("dependencyOf", StrList, false, NoDefault),
    ];
    static API: [Field; 5] = [
        f("type", Str, true, No),
        f("lifecycle", Str, true, No),
        f("owner", Str, true, D("group")),
        f("definition", StrOrPlaceholder, true, No),
        f("system", Str, false, D("system")),
    ];
    static RESOURCE: [Field; 5] = [
        f("type", Str, true, No),
        f("owner", Str, true, D("group")),
        f("dependsOn", StrList, false, NoDefault),
        f("dependencyOf", StrList, false, NoDefault),
        f("system", Str, false, D("system")),
    ];
    static SYSTEM: [Field; 3] = [
        f("owner", Str, true, D("group")),
        f("domain", Str, false, D("domain")),
        f("type", Str, false, No),
    ];
    static DOMAIN: [Field; 3] = [
        f("owner", Str, true, D("group")),
        f("subdomainOf", Str, false, D("domain")),
        f("type", Str, false, No),
    ];
    static GROUP: [Field; 5] = [
        f("type", Str, true, No),
        f("children", StrList, true, D("group")),
        f("profile", Object, false, No),
        f("parent", Str, false, D("group")),
        f("members", StrList, false, D("user")),
    ];
    static USER: [Field; 2] = [
        f("profile", Object, false, No),
        f("memberOf", StrList, false, D("group")),
    ];
    static LOCATION: [Field; 4] = [
        f("type", Str, false, No),
        f("target", Str, false, No),
        f("targets", StrList, false, No),
        f("presence", OneOf(&["required", "optional"]), false, No),
    ];
    Some(match kind {
        "Component" => &COMPONENT,
        "API" => &API,
        "Resource" => &RESOURCE,
        "System" => &SYSTEM,
        "Domain" => &DOMAIN,
        "Group" => &GROUP,
        "User" => &USER,
        "Location" => &LOCATION,
        _ => return None,
    })
}

const BUILTIN_KINDS: [&str; 8] = [
    "Component",
    "API",
    "Resource",
    "System",
    "Domain",
    "Group",
    "User",
    "Location",
];

const ROOT_FIELDS: [&str; 6] = [
    "apiVersion",
    "kind",
    "metadata",
    "spec",
    "relations",
    "status",
];

struct Checker<'a> {
    file: &'a Path,
    sink: &'a mut Sink,
    /// Whether this document had a finding (kept or only counted).
    found: bool,
}

impl Checker<'_> {
    fn push(&mut self, pos: Pos, rule: &str, message: String) {
        self.found = true;
        self.sink.push(Finding {
            file: self.file.to_path_buf(),
            line: pos.line,
            col: pos.col,
            message,
            rule: rule.into(),
        });
    }

    /// A required string field of a mapping; reports and returns `None` when absent or wrong.
    fn required_str<'n>(
        &mut self,
        map: &'n Node,
        key: &str,
        path: &str,
        rule: &str,
    ) -> Option<(&'n str, Pos)> {
        match map.get(key) {
            None => {
                self.push(map.pos, rule, format!("{path} is missing; it is required"));
                None
            }
            Some((_, v)) => match v.as_str() {
                Some("") => {
                    self.push(v.pos, rule, format!("{path} must not be empty"));
                    None
                }
                Some(s) => Some((s, v.pos)),
                None => {
                    self.push(
                        v.pos,
                        rule,
                        format!("{path} must be a string, found {}", v.type_name()),
                    );
                    None
                }
            },
        }
    }

    /// One document's entity: the root's shape and fields, kind and apiVersion, metadata
    /// and (built-in kinds) spec are checked; `None` when it cannot be named.
    fn entity(&mut self, root: &Node, doc_pos: Pos) -> Option<Entity> {
        if !matches!(root.value, Value::Map(_)) {
            self.push(
                root.pos,
                "document-not-object",
                format!(
                    "expected a mapping at the root of the document, found {}",
                    root.type_name()
                ),
            );
            return None;
        }
        self.root_fields(root);
        let api_version = self.required_str(root, "apiVersion", "apiVersion", "api-version");
        let kind = self.required_str(root, "kind", "kind", "kind");
        let builtin = self.kind_and_version(api_version, kind);
        let (name, namespace) = match self.metadata_node(root) {
            Some(m) => self.metadata(m),
            None => (None, None),
        };
        let namespace = namespace.unwrap_or_else(|| "default".into());
        let spec = self.spec_node(root);
        let mut owner = None;
        if builtin && let Some((k, _)) = kind {
            match spec {
                None if root.get("spec").is_none() => self.push(
                    root.pos,
                    "spec",
                    format!("spec is missing; kind {k} requires it"),
                ),
                None => {}
                Some(spec) => owner = self.spec(k, spec, &namespace),
            }
        }
        let (Some((_, _)), Some((k, _)), Some(name)) = (api_version, kind, name) else {
            return None;
        };
        let json = root.to_json();
        let hash = content_hash(&json);
        Some(Entity {
            entity_ref: EntityRef::new(k, &namespace, &name),
            owner,
            pos: doc_pos,
            json,
            hash,
        })
    }

    /// Fields at the root other than Backstage's own are reported (a typo loses data).
    fn root_fields(&mut self, root: &Node) {
        if let Value::Map(entries) = &root.value {
            for (k, _) in entries {
                let key = k.key_string();
                if !ROOT_FIELDS.contains(&key.as_str()) {
                    self.push(
                        k.pos,
                        "unknown-root-field",
                        format!(
                            "unknown field {} at the root; allowed: {}",
                            excerpt(&key),
                            ROOT_FIELDS.join(", ")
                        ),
                    );
                }
            }
        }
    }

    /// Checks `kind` and `apiVersion` alone and together; whether the entity is of a
    /// built-in kind (whose spec is then checked).
    fn kind_and_version(
        &mut self,
        api_version: Option<(&str, Pos)>,
        kind: Option<(&str, Pos)>,
    ) -> bool {
        if let Some((v, pos)) = api_version
            && !is_valid_api_version(v)
        {
            self.push(
                    pos,
                    "api-version",
                    format!("apiVersion {} is not valid; expected <group>/<version> such as backstage.io/v1alpha1", excerpt(v)),
                );
        }
        let mut builtin = false;
        if let (Some((v, vpos)), Some((k, kpos))) = (api_version, kind) {
            if !refs::is_valid_kind(k) {
                self.push(
                    kpos,
                    "kind",
                    format!(
                        "kind {} is not valid; expected {}",
                        excerpt(k),
                        refs::KIND_EXPECTED
                    ),
                );
            } else if v.starts_with("backstage.io/") {
                builtin = self.builtin_kind((v, vpos), (k, kpos));
            }
        }
        builtin
    }

    /// Whether `k` of a `backstage.io/` apiVersion `v` is a built-in kind spelled right with
    /// an apiVersion it has; a finding says what is wrong when not.
    fn builtin_kind(&mut self, (v, vpos): (&str, Pos), (k, kpos): (&str, Pos)) -> bool {
        if let Some(proper) = BUILTIN_KINDS.iter().find(|b| b.eq_ignore_ascii_case(k)) {
            if *proper != k {
                self.push(
                    kpos,
                    "kind",
                    format!(
                        "kind {} is not a built-in kind; did you mean {proper:?}?",
                        excerpt(k)
                    ),
                );
            } else if !BUILTIN_API_VERSIONS.contains(&v) {
                self.push(
                    vpos,
                    "api-version",
                    format!(
                        "apiVersion {} is not valid for kind {k}; expected one of {}",
                        excerpt(v),
                        BUILTIN_API_VERSIONS.join(", ")
                    ),
                );
            } else {
                return true;
            }
        } else {
            self.push(
                kpos,
                "kind",
                format!(
                    "kind {} is not a built-in kind of {}; expected one of {}",
                    excerpt(k),
                    excerpt(v),
                    BUILTIN_KINDS.join(", ")
                ),
            );
        }
        false
    }

    /// The metadata mapping, if there is one (its absence or shape is a finding).
    fn metadata_node<'n>(&mut self, root: &'n Node) -> Option<&'n Node> {
        match root.get("metadata") {
            None => {
                self.push(
                    root.pos,
                    "metadata",
                    "metadata is missing; it is required".into(),
                );
                None
            }
            Some((_, m)) if !matches!(m.value, Value::Map(_)) => {
                self.push(
                    m.pos,
                    "metadata",
                    format!("metadata must be a mapping, found {}", m.type_name()),
                );
                None
            }
            Some((_, m)) => Some(m),
        }
    }

    /// The spec mapping, if there is one of the right shape.
    fn spec_node<'n>(&mut self, root: &'n Node) -> Option<&'n Node> {
        match root.get("spec") {
            Some((_, s)) if !matches!(s.value, Value::Map(_)) => {
                self.push(
                    s.pos,
                    "spec",
                    format!("spec must be a mapping, found {}", s.type_name()),
                );
                None
            }
            Some((_, s)) => Some(s),
            None => None,
        }
    }

    /// The metadata's name and namespace (when valid), every metadata field checked.
    fn metadata(&mut self, m: &Node) -> (Option<String>, Option<String>) {
        let name = self.metadata_name(m);
        let namespace = self.metadata_namespace(m);
        for key in ["title", "description"] {
            if let Some((_, v)) = m.get(key)
                && v.as_str().is_none()
            {
                self.push(
                    v.pos,
                    "field-type",
                    format!("metadata.{key} must be a string, found {}", v.type_name()),
                );
            }
        }
        self.labels_and_annotations(m);
        self.tags(m);
        self.links(m);
        (name, namespace)
    }

    /// `metadata.name`: required, and a valid object name.
    fn metadata_name(&mut self, m: &Node) -> Option<String> {
        self.required_str(m, "name", "metadata.name", "name-format")
            .and_then(|(n, pos)| {
                if refs::is_valid_object_name(n) {
                    Some(n.to_string())
                } else {
                    self.push(
                        pos,
                        "name-format",
                        format!(
                            "metadata.name {} is not valid; expected {}",
                            excerpt(n),
                            refs::NAME_EXPECTED
                        ),
                    );
                    None
                }
            })
    }

    /// `metadata.namespace`: optional, a valid namespace when given.
    fn metadata_namespace(&mut self, m: &Node) -> Option<String> {
        match m.get("namespace") {
            None => None,
            Some((_, v)) => match v.as_str() {
                Some(ns) if refs::is_valid_namespace(ns) => Some(ns.to_string()),
                Some(ns) => {
                    self.push(
                        v.pos,
                        "namespace-format",
                        format!(
                            "metadata.namespace {} is not valid; expected {}",
                            excerpt(ns),
                            refs::NAMESPACE_EXPECTED
                        ),
                    );
                    None
                }
                None => {
                    self.push(
                        v.pos,
                        "namespace-format",
                        format!(
                            "metadata.namespace must be a string, found {}",
                            v.type_name()
                        ),
                    );
                    None
                }
            },
        }
    }

    /// `metadata.labels` and `metadata.annotations`: mappings of valid keys to strings
    /// (label values also valid names, or empty).
    fn labels_and_annotations(&mut self, m: &Node) {
        for (field, rule_key, rule_value) in [
            ("labels", "label-key", "label-value"),
            ("annotations", "annotation-key", "annotation-value"),
        ] {
            let Some((_, v)) = m.get(field) else { continue };
            let Value::Map(entries) = &v.value else {
                self.push(
                    v.pos,
                    "field-type",
                    format!(
                        "metadata.{field} must be a mapping, found {}",
                        v.type_name()
                    ),
                );
                continue;
            };
            for (k, val) in entries {
                let key = k.key_string();
                if !is_valid_label_key(&key) {
                    self.push(
                        k.pos,
                        rule_key,
                        format!("metadata.{field} key {} is not valid; expected [<dns-subdomain>/]<name>, name as for metadata.name", excerpt(&key)),
                    );
                }
                match (field, val.as_str()) {
                    (_, None) => self.push(
                        val.pos,
                        rule_value,
                        format!(
                            "metadata.{field}.{} must be a string, found {}",
                            cut(&key),
                            val.type_name()
                        ),
                    ),
                    ("labels", Some(s)) if !s.is_empty() && !refs::is_valid_object_name(s) => self
                        .push(
                            val.pos,
                            rule_value,
                            format!(
                                "metadata.labels.{} value {} is not valid; expected empty or {}",
                                cut(&key),
                                excerpt(s),
                                refs::NAME_EXPECTED
                            ),
                        ),
                    _ => {}
                }
            }
        }
    }

    /// `metadata.tags`: a sequence of valid tags.
    fn tags(&mut self, m: &Node) {
        if let Some((_, v)) = m.get("tags") {
            match &v.value {
                Value::Seq(items) => {
                    for t in items {
                        match t.as_str() {
                            Some(s) if is_valid_tag(s) => {}
                            _ => self.push(
                                t.pos,
                                "tag-format",
                                format!(
                                    "tag {} is not valid; expected 1-63 of a-z 0-9 : + # in dash-separated words",
                                    match (&t.value, t.as_str()) {
                                        (_, Some(s)) => excerpt(s),
                                        (Value::Seq(_) | Value::Map(_), _) => format!("(a {})", t.type_name()),
                                        _ => serde_json::to_string(&t.to_json()).unwrap_or_default(),
                                    }
                                ),
                            ),
                        }
                    }
                }
                _ => self.push(
                    v.pos,
                    "field-type",
                    format!("metadata.tags must be a sequence, found {}", v.type_name()),
                ),
            }
        }
    }

    /// `metadata.links`: a sequence of mappings, each with a `url`.
    fn links(&mut self, m: &Node) {
        if let Some((_, v)) = m.get("links") {
            match &v.value {
                Value::Seq(items) => {
                    for l in items {
                        if !matches!(l.value, Value::Map(_)) {
                            self.push(
                                l.pos,
                                "link",
                                format!("a link must be a mapping, found {}", l.type_name()),
                            );
                        } else {
                            self.required_str(l, "url", "metadata.links[].url", "link");
                        }
                    }
                }
                _ => self.push(
                    v.pos,
                    "field-type",
                    format!("metadata.links must be a sequence, found {}", v.type_name()),
                ),
            }
        }
    }

    /// The spec fields of built-in kind `kind` checked; the owner ref, when valid.
    fn spec(&mut self, kind: &str, spec: &Node, namespace: &str) -> Option<EntityRef> {
        let fields = kind_fields(kind)?;
        let mut owner = None;
        for field in fields {
            let path = format!("spec.{}", field.name);
            let Some((key_node, v)) = spec.get(field.name) else {
                if field.required {
                    self.push(
                        spec.pos,
                        "required-field",
                        format!("{path} is missing; kind {kind} requires it"),
                    );
                }
                continue;
            };
            let Some(strings) = self.spec_strings(field, &path, key_node, v) else {
                continue;
            };
            let default_kind = match field.refs {
                RefKind::No => continue,
                RefKind::NoDefault => None,
                RefKind::Default(k) => Some(k),
            };
            for (s, pos) in strings {
                match refs::parse_ref(s, default_kind, namespace) {
                    Ok(r) if field.name == "owner" => owner = Some(r),
                    Ok(_) => {}
                    Err(
                        e @ (RefError::Shape(_)
                        | RefError::MissingKind(_)
                        | RefError::Format { .. }),
                    ) => self.push(pos, "entity-ref", format!("{path}: {e}")),
                }
            }
        }
        owner
    }

    /// The strings of spec field `v` to read as entity refs once its type is checked; `None`
    /// when there is nothing more to check (a wrong type is a finding).
    fn spec_strings<'n>(
        &mut self,
        field: &Field,
        path: &str,
        key_node: &Node,
        v: &'n Node,
    ) -> Option<Vec<(&'n str, Pos)>> {
        Some(match (field.ty, &v.value) {
            (Str | StrOrPlaceholder, Value::Str(s)) if s.is_empty() => {
                self.push(v.pos, "required-field", format!("{path} must not be empty"));
                return None;
            }
            (Str | StrOrPlaceholder, Value::Str(s)) => vec![(s.as_str(), v.pos)],
            (StrOrPlaceholder, Value::Map(entries))
                if entries.len() == 1 && entries[0].0.key_string().starts_with('$') =>
            {
                return None;
            }
            (StrList, Value::Seq(items)) => {
                let mut out = Vec::new();
                for it in items {
                    match it.as_str() {
                        Some(s) => out.push((s, it.pos)),
                        None => self.push(
                            it.pos,
                            "field-type",
                            format!("{path} items must be strings, found {}", it.type_name()),
                        ),
                    }
                }
                out
            }
            (Object, Value::Map(_)) => return None,
            (OneOf(allowed), Value::Str(s)) if allowed.contains(&s.as_str()) => return None,
            (OneOf(allowed), _) => {
                self.push(
                    v.pos,
                    "field-type",
                    format!("{path} must be one of {}", allowed.join(", ")),
                );
                return None;
            }
            (ty, _) => {
                let want = match ty {
                    Str => "a string",
                    StrOrPlaceholder => "a string or a {$text: ...} placeholder",
                    StrList => "a sequence of strings",
                    Object => "a mapping",
                    OneOf(_) => "one of the allowed values",
                };
                let (rule, pos) = if matches!(v.value, Value::Null) && field.required {
                    ("required-field", key_node.pos)
                } else {
                    ("field-type", v.pos)
                };
                self.push(
                    pos,
                    rule,
                    format!("{path} must be {want}, found {}", v.type_name()),
                );
                return None;
            }
        })
    }
}

/// The entity's content hash: SHA-256 of its canonical JSON, in hex (tells "changed" from
/// "saved again").
fn content_hash(json: &serde_json::Value) -> String {
    let canonical = serde_json::to_vec(json).unwrap_or_default();
    Sha256::digest(&canonical)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Backstage's `isValidApiVersion`: `[<dns-subdomain>/]<version>`.
fn is_valid_api_version(v: &str) -> bool {
    let version_ok =
        |s: &str| (1..=63).contains(&s.len()) && s.bytes().all(|c| c.is_ascii_alphanumeric());
    match v.split('/').collect::<Vec<_>>().as_slice() {
        [version] => version_ok(version),
        [group, version] => refs::is_dns_subdomain(group) && version_ok(version),
        _ => false,
    }
}

/// Backstage's label/annotation key: `[<dns-subdomain>/]<object-name>`.
fn is_valid_label_key(k: &str) -> bool {
    match k.split('/').collect::<Vec<_>>().as_slice() {
        [name] => refs::is_valid_object_name(name),
        [prefix, name] => refs::is_dns_subdomain(prefix) && refs::is_valid_object_name(name),
        _ => false,
    }
}

/// Backstage's tag: `^[a-z0-9:+#]+(-[a-z0-9:+#]+)*$`, 1-63 chars.
fn is_valid_tag(t: &str) -> bool {
    (1..=63).contains(&t.len())
        && t.split('-').all(|w| {
            !w.is_empty()
                && w.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b":+#".contains(&c))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "apiVersion: backstage.io/v1alpha1
kind: Component
metadata:
  name: payments
  labels:
    tier: gold
  annotations:
    github.com/project-slug: acme/payments
  tags: [java, c++]
spec:
  type: service
  lifecycle: production
  owner: team-a
  providesApis: [payments-api]
  dependsOn: ['resource:db']
";

    fn findings(text: &str) -> Vec<(usize, usize, String)> {
        check_text(text, Path::new("c.yaml"))
            .findings
            .into_iter()
            .map(|f| (f.line, f.col, f.rule))
            .collect()
    }

    /// Replaces the first occurrence of `from` in the good fixture.
    fn with(from: &str, to: &str) -> String {
        assert!(GOOD.contains(from), "{from}");
        GOOD.replacen(from, to, 1)
    }

    #[test]
    fn good_component_yields_entity_with_full_owner_ref() {
        let r = check_text(GOOD, Path::new("c.yaml"));
        assert!(r.findings.is_empty(), "{:?}", r.findings);
        assert_eq!(r.entities.len(), 1);
        let e = &r.entities[0];
        assert_eq!(e.entity_ref.to_string(), "component:default/payments");
        assert_eq!(
            e.owner.as_ref().unwrap().to_string(),
            "group:default/team-a"
        );
        assert_eq!(e.json["spec"]["owner"], "team-a");
        assert_eq!(e.hash.len(), 64);
    }

    #[test]
    fn owner_inherits_entity_namespace_and_explicit_kind() {
        let t = with("  name: payments\n", "  name: payments\n  namespace: ops\n")
            .replace("owner: team-a", "owner: user:jane");
        let r = check_text(&t, Path::new("c.yaml"));
        assert!(r.findings.is_empty(), "{:?}", r.findings);
        assert_eq!(
            r.entities[0].entity_ref.to_string(),
            "component:ops/payments"
        );
        assert_eq!(
            r.entities[0].owner.as_ref().unwrap().to_string(),
            "user:ops/jane"
        );
    }

    #[test]
    fn rule_missing_owner() {
        assert_eq!(
            findings(&with("  owner: team-a\n", "")),
            vec![(11, 3, "required-field".into())]
        );
    }

    #[test]
    fn rule_empty_owner() {
        assert_eq!(
            findings(&with("owner: team-a", "owner:")),
            vec![(13, 3, "required-field".into())]
        );
    }

    #[test]
    fn rule_owner_ref_shape() {
        assert_eq!(
            findings(&with("owner: team-a", "owner: 'group:'")),
            vec![(13, 10, "entity-ref".into())]
        );
    }

    #[test]
    fn rule_ref_without_default_kind() {
        assert_eq!(
            findings(&with("['resource:db']", "[db]")),
            vec![(15, 15, "entity-ref".into())]
        );
    }

    #[test]
    fn rule_api_version() {
        assert_eq!(
            findings(&with("backstage.io/v1alpha1", "backstage.io/v2")),
            vec![(1, 13, "api-version".into())]
        );
        assert_eq!(
            findings(&with("backstage.io/v1alpha1", "not a version")),
            vec![(1, 13, "api-version".into())]
        );
    }

    #[test]
    fn rule_kind() {
        assert_eq!(
            findings(&with("kind: Component", "kind: component")),
            vec![(2, 7, "kind".into())]
        );
        assert_eq!(
            findings(&with("kind: Component", "kind: Widget")),
            vec![(2, 7, "kind".into())]
        );
    }

    #[test]
    fn custom_api_groups_are_not_checked_against_builtin_kinds() {
        let t = "apiVersion: scaffolder.backstage.io/v1beta3\nkind: Template\nmetadata:\n  name: t\nspec: {}\n";
        let r = check_text(t, Path::new("t.yaml"));
        assert!(r.findings.is_empty(), "{:?}", r.findings);
        assert_eq!(r.entities.len(), 1);
    }

    #[test]
    fn rule_name_format() {
        assert_eq!(
            findings(&with("name: payments", "name: Payments_Svc!")),
            vec![(4, 9, "name-format".into())]
        );
        let long = format!("name: {}", "a".repeat(64));
        assert_eq!(
            findings(&with("name: payments", &long)),
            vec![(4, 9, "name-format".into())]
        );
    }

    #[test]
    fn rule_name_missing() {
        assert_eq!(
            findings(&with("  name: payments\n", "  title: x\n")),
            vec![(4, 3, "name-format".into())]
        );
    }

    #[test]
    fn rule_namespace_format() {
        assert_eq!(
            findings(&with(
                "  name: payments\n",
                "  name: payments\n  namespace: Ops\n"
            )),
            vec![(5, 14, "namespace-format".into())]
        );
    }

    #[test]
    fn rule_label_and_annotation() {
        assert_eq!(
            findings(&with("tier: gold", "tier: 'gold!'")),
            vec![(6, 11, "label-value".into())]
        );
        assert_eq!(
            findings(&with("github.com/project-slug", "Bad_Domain/slug")),
            vec![(8, 5, "annotation-key".into())]
        );
        assert_eq!(
            findings(&with("acme/payments", "42")),
            vec![(8, 30, "annotation-value".into())]
        );
    }

    #[test]
    fn rule_tag_format() {
        assert_eq!(
            findings(&with("[java, c++]", "[Java]")),
            vec![(9, 10, "tag-format".into())]
        );
    }

    #[test]
    fn rule_unknown_root_field() {
        assert_eq!(
            findings(&format!("{GOOD}owner: x\n")),
            vec![(16, 1, "unknown-root-field".into())]
        );
    }

    #[test]
    fn rule_spec_missing_and_not_mapping() {
        let t = GOOD.split("spec:").next().unwrap().to_string();
        assert_eq!(findings(&t), vec![(1, 1, "spec".into())]);
        assert_eq!(
            findings(&format!("{t}spec: [1]\n")),
            vec![(10, 7, "spec".into())]
        );
    }

    #[test]
    fn rule_field_type() {
        assert_eq!(
            findings(&with("[payments-api]", "payments-api")),
            vec![(14, 17, "field-type".into())]
        );
    }

    #[test]
    fn rule_document_not_object_and_syntax() {
        assert_eq!(
            findings("- a\n- b\n"),
            vec![(1, 1, "document-not-object".into())]
        );
        let broken = with("  lifecycle: production\n", "  lifecycle: [production\n");
        let f = findings(&broken);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].2, "yaml-syntax");
    }

    #[test]
    fn rule_duplicate_key_drops_only_that_document() {
        let t = format!(
            "{}---\n{}",
            with("  type: service\n", "  type: service\n  type: web\n"),
            GOOD.replace("payments", "billing")
        );
        let r = check_text(&t, Path::new("c.yaml"));
        assert_eq!(r.findings.len(), 1);
        assert_eq!(r.findings[0].rule, "yaml-duplicate-key");
        assert_eq!(r.entities.len(), 1);
        assert_eq!(r.entities[0].entity_ref.name, "billing");
    }

    #[test]
    fn rule_other_builtin_kinds_required_fields() {
        let api = "apiVersion: backstage.io/v1alpha1\nkind: API\nmetadata: {name: a}\nspec: {type: openapi, lifecycle: x, owner: t, definition: {$text: ./o.yaml}}\n";
        assert!(findings(api).is_empty());
        let group = "apiVersion: backstage.io/v1alpha1\nkind: Group\nmetadata: {name: g}\nspec: {type: team}\n";
        assert_eq!(findings(group), vec![(4, 7, "required-field".into())]);
        let system = "apiVersion: backstage.io/v1beta1\nkind: System\nmetadata: {name: s}\nspec: {domain: d}\n";
        assert_eq!(findings(system), vec![(4, 7, "required-field".into())]);
        let user = "apiVersion: backstage.io/v1alpha1\nkind: User\nmetadata: {name: u}\nspec: {memberOf: [team-a]}\n";
        assert!(findings(user).is_empty());
        let loc = "apiVersion: backstage.io/v1alpha1\nkind: Location\nmetadata: {name: l}\nspec: {presence: maybe}\n";
        assert_eq!(findings(loc), vec![(4, 18, "field-type".into())]);
    }

    #[test]
    fn rule_file_too_large() {
        let big = vec![b'#'; (MAX_FILE_BYTES + 1) as usize];
        let r = check_bytes(&big, Path::new("big.yaml"));
        assert_eq!(r.findings[0].rule, "file-too-large");
        assert!(r.findings[0].message.contains("1 MiB"));
    }

    #[test]
    fn finding_display_is_file_line_col() {
        let r = check_text(
            &with("  owner: team-a\n", ""),
            Path::new("dir/catalog-info.yaml"),
        );
        assert_eq!(
            r.findings[0].to_string(),
            "dir/catalog-info.yaml:11:3: spec.owner is missing; kind Component requires it (required-field)"
        );
    }
}

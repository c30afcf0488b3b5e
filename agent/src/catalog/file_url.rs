//! Whether two location URLs name the same catalog file.
//!
//! A file Backstage already reads may have been registered by someone else (or emitted by
//! Backstage's discovery) under another spelling of its URL than the one the agent derives
//! from `catalog.url_template`. Registering ours beside it would make two locations read one
//! file (Backstage then refuses one of them as a conflict, and keeps its entities stale), so
//! every comparison of "is this location the file?" goes through [`same_file`].
//!
//! Two families of spellings count as one:
//!
//! - **Any URL**: scheme and host case, default ports, `.`/`..` segments, percent-encoding
//!   and the fragment do not count; the query does (it may select the file).
//! - **GitHub (and GitHub Enterprise) file URLs**: `https://HOST/OWNER/REPO/blob/REF/PATH`,
//!   the same with `tree` or `raw` instead of `blob` (GitHub redirects those, and Backstage's
//!   GitHub reader accepts all three), `https://raw.githubusercontent.com/OWNER/REPO/REF/PATH`
//!   (with or without `refs/heads/`), and the contents API
//!   (`https://api.github.com/repos/OWNER/REPO/contents/PATH?ref=REF`, or `HOST/api/v3/...`
//!   on GitHub Enterprise) name one file. Owner and repository compare without case (GitHub
//!   does), a `.git` suffix of the repository, a trailing slash and the query of a page URL
//!   (`?plain=1`) do not count, and `http`/`https` on the same host are the same.
//!
//! The `blob`/`tree`/`raw` shape is recognised on every host, not only github.com, because
//! GitHub Enterprise runs on hosts the agent cannot list. GitLab (`/-/blob/`) and Gitea
//! (`/src/branch/`) use other shapes, but Bitbucket Cloud also serves raw files at
//! `https://bitbucket.org/WORKSPACE/REPO/raw/REF/PATH`. Such a URL is read the GitHub way
//! too, which is harmless: it is taken for the same file only as a URL of the same host,
//! workspace, repository, ref and path (its `blob` and `tree` forms, which Bitbucket does
//! not serve, or another case of workspace and repository, which Bitbucket's lower-case
//! slugs do not have), so no two Bitbucket files are confused; Bitbucket's own page
//! (`/src/REF/PATH`) is not recognised and stays apart; and the extra spellings the lookup
//! asks Backstage about (`blob`, `tree`, `HOST/api/v3/repos/...`) name no Location entity
//! there, so they find nothing and cost one catalog query each.

/// Whether two URLs name the same file (see the module docs for what counts).
pub(crate) fn same_file(a: &str, b: &str) -> bool {
    a == b || matches!((key(a), key(b)), (Some(x), Some(y)) if x == y)
}

/// The other spellings under which a GitHub file URL may be registered: the `blob` and the
/// `tree` form (the two a person copies from GitHub's pages; `blob` is also what Backstage's
/// GitHub discovery emits). Empty for a URL that is not a GitHub page or raw URL; `url`
/// itself is left out. Owner, repository and path are kept as spelled.
pub(crate) fn github_spellings(url: &str) -> Vec<String> {
    let Some(p) = GithubParts::of(url) else {
        return Vec::new();
    };
    ["blob", "tree"]
        .iter()
        .map(|kind| p.page(kind))
        .filter(|s| s != url)
        .collect()
}

/// How many leading segments of `REF/PATH` may form the ref, for the contents-API spellings
/// of [`github_target_spellings`] (`main`, `release/1.2`, `user/topic/x`).
const MAX_REF_SEGMENTS: usize = 3;

/// Every other spelling under which a Location entity may name the GitHub file at `url`, to
/// look it up by `spec.target` (Backstage matches the whole value): the `blob`, `tree` and
/// `raw` page forms, and the contents API (`https://api.github.com/repos/...` on github.com,
/// `HOST/api/v3/repos/...` on GitHub Enterprise), plus `raw.githubusercontent.com` on
/// github.com: every form [`same_file`] takes for the file. The contents API names the ref
/// apart from the path, and where a ref holding `/` ends is not known from `REF/PATH`: one
/// spelling per split, the ref up to [`MAX_REF_SEGMENTS`] segments. Empty for a URL that is
/// not a GitHub page or raw URL; `url` itself is left out.
pub(crate) fn github_target_spellings(url: &str) -> Vec<String> {
    let Some(p) = GithubParts::of(url) else {
        return Vec::new();
    };
    let mut out: Vec<String> = ["blob", "tree", "raw"]
        .iter()
        .map(|kind| p.page(kind))
        .collect();
    let (o, r) = (&p.owner, &p.repo);
    let api = if p.github_com {
        out.push(format!(
            "https://raw.githubusercontent.com/{o}/{r}/{}",
            p.rest.join("/")
        ));
        "https://api.github.com".to_string()
    } else {
        format!("{}/api/v3", p.base)
    };
    for split in 1..p.rest.len().min(MAX_REF_SEGMENTS + 1) {
        let (reference, path) = p.rest.split_at(split);
        out.push(format!(
            "{api}/repos/{o}/{r}/contents/{}?ref={}",
            path.join("/"),
            reference.join("/")
        ));
    }
    out.retain(|s| s != url);
    out
}

/// A GitHub page or raw URL taken apart, as spelled: `base` (scheme, host, port; github.com
/// for `raw.githubusercontent.com`), owner, repository and the `REF/PATH` segments.
struct GithubParts {
    base: String,
    github_com: bool,
    owner: String,
    repo: String,
    rest: Vec<String>,
}

impl GithubParts {
    fn of(url: &str) -> Option<Self> {
        let u = url::Url::parse(url).ok()?;
        if !matches!(key(url), Some(Key::Repo { .. })) {
            return None;
        }
        let segs: Vec<&str> = u.path_segments().map(Iterator::collect).unwrap_or_default();
        let host = u.host_str().unwrap_or_default().to_ascii_lowercase();
        let (base, o, r, rest) = match (host.as_str(), segs.as_slice()) {
            ("raw.githubusercontent.com", [o, r, rest @ ..]) => {
                ("https://github.com".to_string(), o, r, rest)
            }
            (_, [o, r, kind, rest @ ..]) if matches!(*kind, "blob" | "tree" | "raw") => {
                let mut base = format!("{}://{}", u.scheme(), u.host_str().unwrap_or_default());
                if let Some(p) = u.port() {
                    base.push_str(&format!(":{p}"));
                }
                (base, o, r, rest)
            }
            _ => return None,
        };
        let github_com = matches!(
            base.split_once("://")
                .map(|(_, h)| h.to_ascii_lowercase())
                .as_deref(),
            Some("github.com" | "www.github.com")
        );
        Some(Self {
            base,
            github_com,
            owner: (*o).to_string(),
            repo: (*r).to_string(),
            rest: rest.iter().map(|s| (*s).to_string()).collect(),
        })
    }

    /// The page form `BASE/OWNER/REPO/KIND/REF/PATH`.
    fn page(&self, kind: &str) -> String {
        format!(
            "{}/{}/{}/{kind}/{}",
            self.base,
            self.owner,
            self.repo,
            self.rest.join("/")
        )
    }
}

/// A URL reduced to what names the file.
#[derive(Debug, PartialEq, Eq)]
enum Key {
    /// A GitHub file: host (github.com for its raw and API hosts), explicit port, owner and
    /// repository (lower case), then the ref and path segments together (a ref may hold
    /// `/`, so where the ref ends and the path starts is not known, and need not be).
    Repo {
        host: String,
        port: Option<u16>,
        owner: String,
        repo: String,
        rest: Vec<Vec<u8>>,
    },
    /// Any other URL.
    Plain {
        scheme: String,
        host: String,
        port: Option<u16>,
        segments: Vec<Vec<u8>>,
        query: Option<String>,
    },
}

fn key(s: &str) -> Option<Key> {
    let u = url::Url::parse(s).ok()?;
    let host = u.host_str()?.to_ascii_lowercase();
    let segments: Vec<Vec<u8>> = u
        .path_segments()?
        .map(|seg| percent_encoding::percent_decode_str(seg).collect::<Vec<u8>>())
        .collect();
    if matches!(u.scheme(), "http" | "https")
        && let Some(k) = github(&u, &host, &segments)
    {
        return Some(k);
    }
    Some(Key::Plain {
        scheme: u.scheme().to_string(),
        host,
        port: u.port_or_known_default(),
        segments,
        query: u.query().map(str::to_string),
    })
}

/// The GitHub reading of a URL, when it has one of the GitHub file shapes.
fn github(u: &url::Url, host: &str, segs: &[Vec<u8>]) -> Option<Key> {
    let mut segs: Vec<&[u8]> = segs.iter().map(Vec::as_slice).collect();
    if segs.len() > 1 && segs.last().is_some_and(|s| s.is_empty()) {
        segs.pop(); // a trailing slash
    }
    let port = u.port();
    let (host, port, owner, repo, rest): (&str, _, &[u8], &[u8], _) = match (host, segs.as_slice())
    {
        ("raw.githubusercontent.com", [o, r, rest @ ..]) => {
            ("github.com", None, o, r, without_refs_heads(rest))
        }
        ("api.github.com", [b"repos", o, r, b"contents", path @ ..]) => {
            ("github.com", None, o, r, with_ref(u, path)?)
        }
        (h, [b"api", b"v3", b"repos", o, r, b"contents", path @ ..]) => {
            (h, port, o, r, with_ref(u, path)?)
        }
        (h, [o, r, kind, rest @ ..]) if matches!(*kind, b"blob" | b"tree" | b"raw") => {
            let h = if h == "www.github.com" {
                "github.com"
            } else {
                h
            };
            let port = if h == "github.com" { None } else { port };
            (h, port, o, r, without_refs_heads(rest))
        }
        _ => return None,
    };
    // A ref and at least one path segment; no empty segment (`a//b` is another path).
    if owner.is_empty() || repo.is_empty() || rest.len() < 2 || rest.iter().any(Vec::is_empty) {
        return None;
    }
    let repo = repo.strip_suffix(b".git").unwrap_or(repo);
    Some(Key::Repo {
        host: host.to_string(),
        port,
        owner: String::from_utf8_lossy(owner).to_lowercase(),
        repo: String::from_utf8_lossy(repo).to_lowercase(),
        rest,
    })
}

/// `refs/heads/main/x` names the same as `main/x`.
fn without_refs_heads(rest: &[&[u8]]) -> Vec<Vec<u8>> {
    let rest = match rest {
        [b"refs", b"heads", tail @ ..] if tail.len() >= 2 => tail,
        _ => rest,
    };
    rest.iter().map(|s| s.to_vec()).collect()
}

/// The contents API names the ref in `?ref=`; without it the file is on the default branch,
/// which is not known here, so the URL is compared as spelled (`None`).
fn with_ref(u: &url::Url, path: &[&[u8]]) -> Option<Vec<Vec<u8>>> {
    let r = u.query_pairs().find(|(k, _)| k == "ref")?.1;
    if r.is_empty() {
        return None;
    }
    let mut rest: Vec<Vec<u8>> = r.split('/').map(|p| p.as_bytes().to_vec()).collect();
    rest.extend(path.iter().map(|p| p.to_vec()));
    Some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_spellings_of_one_url_are_the_same_file() {
        let u = "http://127.0.0.1:9/raw/r/main/svc/catalog-info.yaml";
        for other in [
            u,
            "HTTP://127.0.0.1:9/raw/r/main/svc/catalog%2Dinfo.yaml",
            "http://127.0.0.1:9/raw/r/main/svc/./catalog-info.yaml",
            "http://127.0.0.1:9/raw/r/main/x/../svc/catalog-info.yaml",
            "http://127.0.0.1:9/raw/r/main/svc/catalog-info.yaml#L1",
        ] {
            assert!(same_file(u, other), "{other}");
        }
        for different in [
            "http://127.0.0.1:9/raw/r/main/catalog-info.yaml",
            "http://127.0.0.1:8/raw/r/main/svc/catalog-info.yaml",
            "http://127.0.0.1:9/raw/r/dev/svc/catalog-info.yaml",
            "http://127.0.0.1:9/raw/r/main/svc/catalog-info.yaml?ref=x",
            "http://127.0.0.1:9/raw/r/main/svc/catalog-info.yaml/",
            "http://127.0.0.1:9/raw/R/main/svc/catalog-info.yaml",
            "http://127.0.0.1:9/raw/r/main/svc/Catalog-info.yaml",
            "not a url",
        ] {
            assert!(!same_file(u, different), "{different}");
        }
    }

    const BLOB: &str = "https://github.com/acme/payments/blob/main/svc/catalog-info.yaml";

    #[test]
    fn github_blob_tree_and_raw_page_forms_are_one_file() {
        for other in [
            "https://github.com/acme/payments/tree/main/svc/catalog-info.yaml",
            "https://github.com/acme/payments/raw/main/svc/catalog-info.yaml",
            "https://GITHUB.com:443/acme/payments/blob/main/svc/catalog-info.yaml",
            "http://github.com/acme/payments/blob/main/svc/catalog-info.yaml",
            "https://www.github.com/acme/payments/blob/main/svc/catalog-info.yaml",
        ] {
            assert!(same_file(BLOB, other), "{other}");
            assert!(same_file(other, BLOB), "{other} (reversed)");
        }
    }

    #[test]
    fn github_raw_host_and_contents_api_are_the_same_file() {
        for other in [
            "https://raw.githubusercontent.com/acme/payments/main/svc/catalog-info.yaml",
            "https://raw.githubusercontent.com/acme/payments/refs/heads/main/svc/catalog-info.yaml",
            "https://github.com/acme/payments/blob/refs/heads/main/svc/catalog-info.yaml",
            "https://api.github.com/repos/acme/payments/contents/svc/catalog-info.yaml?ref=main",
        ] {
            assert!(same_file(BLOB, other), "{other}");
        }
        // GitHub Enterprise: the API under /api/v3 on the same host.
        assert!(same_file(
            "https://ghe.example/acme/payments/blob/main/svc/catalog-info.yaml",
            "https://ghe.example/api/v3/repos/acme/payments/contents/svc/catalog-info.yaml?ref=main",
        ));
    }

    #[test]
    fn github_trailing_slash_query_case_and_dot_git_do_not_count() {
        for other in [
            "https://github.com/acme/payments/blob/main/svc/catalog-info.yaml/",
            "https://github.com/acme/payments/blob/main/svc/catalog-info.yaml?plain=1",
            "https://github.com/ACME/Payments/tree/main/svc/catalog-info.yaml",
            "https://github.com/acme/payments.git/blob/main/svc/catalog-info.yaml",
            "https://github.com/acme/payments/blob/main/svc/catalog-info.yaml#L3",
        ] {
            assert!(same_file(BLOB, other), "{other}");
        }
    }

    #[test]
    fn github_forms_of_other_files_stay_apart() {
        for different in [
            // Path and ref are case sensitive on GitHub.
            "https://github.com/acme/payments/blob/main/svc/Catalog-info.yaml",
            "https://github.com/acme/payments/blob/Main/svc/catalog-info.yaml",
            "https://github.com/acme/payments/blob/dev/svc/catalog-info.yaml",
            "https://github.com/acme/payments/blob/main/catalog-info.yaml",
            "https://github.com/acme/other/blob/main/svc/catalog-info.yaml",
            "https://github.com/other/payments/blob/main/svc/catalog-info.yaml",
            "https://ghe.example/acme/payments/blob/main/svc/catalog-info.yaml",
            "https://github.com/acme/payments/blob/main/svc//catalog-info.yaml",
            // No ref: the default branch, which the URL does not name.
            "https://api.github.com/repos/acme/payments/contents/svc/catalog-info.yaml",
            "https://github.com/acme/payments/blob/main",
            "https://github.com/acme/payments/edit/main/svc/catalog-info.yaml",
        ] {
            assert!(!same_file(BLOB, different), "{different}");
        }
        // Explicit ports on an Enterprise host count.
        assert!(!same_file(
            "http://ghe:8080/a/b/blob/main/c.yaml",
            "http://ghe:8081/a/b/tree/main/c.yaml"
        ));
        assert!(same_file(
            "http://ghe:8080/a/b/blob/main/c.yaml",
            "http://ghe:8080/a/b/tree/main/c.yaml"
        ));
    }

    #[test]
    fn github_target_spellings_cover_every_form_same_file_recognises() {
        let all = github_target_spellings(BLOB);
        assert_eq!(
            all,
            vec![
                "https://github.com/acme/payments/tree/main/svc/catalog-info.yaml",
                "https://github.com/acme/payments/raw/main/svc/catalog-info.yaml",
                "https://raw.githubusercontent.com/acme/payments/main/svc/catalog-info.yaml",
                "https://api.github.com/repos/acme/payments/contents/svc/catalog-info.yaml?ref=main",
                "https://api.github.com/repos/acme/payments/contents/catalog-info.yaml?ref=main/svc",
            ]
        );
        // Every one is the same file, and the recognised forms of it are all searched.
        for s in &all {
            assert!(same_file(BLOB, s), "{s}");
        }
        // From the raw host, the page forms on github.com come back (and not itself).
        let raw = "https://raw.githubusercontent.com/acme/payments/main/svc/catalog-info.yaml";
        let from_raw = github_target_spellings(raw);
        assert!(from_raw.contains(&BLOB.to_string()), "{from_raw:?}");
        assert!(!from_raw.contains(&raw.to_string()), "{from_raw:?}");
        // GitHub Enterprise: its own host's API, no raw.githubusercontent.com.
        assert_eq!(
            github_target_spellings("http://ghe:8080/a/b/blob/main/c.yaml"),
            vec![
                "http://ghe:8080/a/b/tree/main/c.yaml",
                "http://ghe:8080/a/b/raw/main/c.yaml",
                "http://ghe:8080/api/v3/repos/a/b/contents/c.yaml?ref=main",
            ]
        );
        // A ref of up to three segments in the contents API form.
        let deep = github_target_spellings("https://github.com/o/r/blob/a/b/c/d/e.yaml");
        let api: Vec<&String> = deep.iter().filter(|s| s.contains("/contents/")).collect();
        assert_eq!(api.len(), 3, "{api:?}");
        assert!(api[2].ends_with("/contents/d/e.yaml?ref=a/b/c"), "{api:?}");
        assert!(github_target_spellings("http://127.0.0.1:9/raw/r/main/c.yaml").is_empty());
    }

    #[test]
    fn a_bitbucket_raw_url_matches_only_itself() {
        let bb = "https://bitbucket.org/ws/repo/raw/main/svc/catalog-info.yaml";
        assert!(same_file(
            bb,
            "https://bitbucket.org/ws/repo/raw/main/svc/./catalog-info.yaml"
        ));
        for other in [
            "https://bitbucket.org/ws/repo/raw/dev/svc/catalog-info.yaml",
            "https://bitbucket.org/ws/repo/src/main/svc/catalog-info.yaml",
            "https://bitbucket.org/ws/other/raw/main/svc/catalog-info.yaml",
            BLOB,
        ] {
            assert!(!same_file(bb, other), "{other}");
        }
    }

    #[test]
    fn github_spellings_are_the_blob_and_tree_forms() {
        assert_eq!(
            github_spellings(BLOB),
            vec!["https://github.com/acme/payments/tree/main/svc/catalog-info.yaml"]
        );
        assert_eq!(
            github_spellings(
                "https://raw.githubusercontent.com/acme/payments/main/svc/catalog-info.yaml"
            ),
            vec![
                BLOB.to_string(),
                "https://github.com/acme/payments/tree/main/svc/catalog-info.yaml".into()
            ]
        );
        assert_eq!(
            github_spellings("http://localhost:7/o/r/tree/main/c.yaml"),
            vec!["http://localhost:7/o/r/blob/main/c.yaml"]
        );
        assert!(github_spellings("http://127.0.0.1:9/raw/r/main/svc/catalog-info.yaml").is_empty());
        assert!(github_spellings("not a url").is_empty());
    }
}

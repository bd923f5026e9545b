//! Comparisons between manifests: which files differ (SPEC D3).

use std::collections::BTreeSet;

use serde::Serialize;

use crate::manifest::Manifest;

/// How a path compares between a local and a peer manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Same content and mode.
    Same,
    /// Both have it, content or mode differ.
    Differs,
    /// Only the local manifest has it.
    OnlyLocal,
    /// Only the peer's has it.
    OnlyPeer,
}

/// Status of one path.
pub fn status(local: &Manifest, peer: &Manifest, path: &str) -> Status {
    match (local.files.get(path), peer.files.get(path)) {
        (Some(a), Some(b)) if a == b => Status::Same,
        (Some(_), Some(_)) => Status::Differs,
        (Some(_), None) => Status::OnlyLocal,
        (None, Some(_)) => Status::OnlyPeer,
        (None, None) => Status::Same,
    }
}

/// Every path whose status is not [`Status::Same`], sorted.
pub fn changed_paths(a: &Manifest, b: &Manifest) -> Vec<String> {
    let all: BTreeSet<&String> = a.files.keys().chain(b.files.keys()).collect();
    all.into_iter()
        .filter(|p| status(a, b, p) != Status::Same)
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Entry;

    fn m(files: &[(&str, u8)]) -> Manifest {
        let mut m = Manifest::default();
        for (p, h) in files {
            m.files.insert(
                p.to_string(),
                Entry {
                    sha256: [*h; 32],
                    size: 1,
                    mode: 0o644,
                },
            );
        }
        m
    }

    #[test]
    fn statuses() {
        let a = m(&[("same", 1), ("diff", 2), ("local", 3)]);
        let b = m(&[("same", 1), ("diff", 9), ("peer", 4)]);
        assert_eq!(status(&a, &b, "same"), Status::Same);
        assert_eq!(status(&a, &b, "diff"), Status::Differs);
        assert_eq!(status(&a, &b, "local"), Status::OnlyLocal);
        assert_eq!(status(&a, &b, "peer"), Status::OnlyPeer);
        assert_eq!(changed_paths(&a, &b), vec!["diff", "local", "peer"]);
    }
}
